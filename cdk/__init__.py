"""CDK constructs and stack of the totesys ETL pipeline (see app.py)."""

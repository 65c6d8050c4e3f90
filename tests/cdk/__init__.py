"""Tests of the CDK app (app.py, cdk/)."""

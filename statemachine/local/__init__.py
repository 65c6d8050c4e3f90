"""Run the deployed state machine definition on this machine: moto for AWS, PostgreSQL for the databases."""

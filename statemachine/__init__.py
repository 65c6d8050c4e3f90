"""The workflow: one Amazon States Language definition, deployed by CDK and executed by the local runner."""

"""Building and synthesizing the real app for the CDK tests, as app.py and the CDK CLI do, and reading it back."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import cx_api
from aws_cdk.assertions import Template

from app import build_app
from cdk.stack import PipelineStack

REPO_ROOT = Path(__file__).resolve().parents[2]

HANDLERS = {
    "extract": "lambdas.extract.handler.handler",
    "transform": "lambdas.transform.handler.handler",
    "load": "lambdas.load.handler.handler",
    "report": "lambdas.report.handler.handler",
    "lease": "lambdas.lease.handler.handler",
}

QUICKSIGHT_PRINCIPAL = "arn:aws:quicksight:us-east-1:123456789012:group/default/analysts"
QUICKSIGHT_SECRET_ARN = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:totesys/warehouse-AbC123"

# A second deployment shape, exercising every optional setting at once.
VARIANT_CONTEXT: dict[str, Any] = {
    "account": "123456789012",
    "alert_emails": ["ops@example.com", "data-team@example.org"],
    "schedule": "cron(0/10 * * * ? *)",
    "reconcile_schedule": "cron(0 4 ? * SUN *)",
    "tables": "sales_order, staff",
    "vpc_id": "vpc-0123456789abcdef0",
    "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    "security_group_ids": "sg-0123456789abcdef0",
    "vpc_endpoints": "true",
    "route_table_ids": "rtb-0123456789abcdef0,rtb-0123456789abcdef1",
    "max_source_connections": "2",
    "reserve_extract_concurrency": "true",
    # An RDS-managed secret (login only) for both databases: where they are comes from the context.
    "totesys_host": "totesys.cluster-abc.eu-west-2.rds.amazonaws.com",
    "totesys_dbname": "totesys",
    "warehouse_host": "warehouse.cluster-abc.eu-west-2.rds.amazonaws.com",
    "warehouse_port": 5433,
    "warehouse_dbname": "warehouse",
    "extract_lookback_seconds": 600,
    "extract_signal_max_age_seconds": 0,
    "extract_partition_rows": 0,
    "held_stuck_after_seconds": 7200,
    "tracing": "false",
    "dashboard": "true",
    "log_retention_days": 90,
    "noncurrent_version_expiration_days": 30,
    "data_transition_days": 60,
    "data_expiration_days": 730,
    "access_log_retention_days": 180,
    "quicksight_principal_arn": QUICKSIGHT_PRINCIPAL,
    "quicksight_warehouse_secret_arn": QUICKSIGHT_SECRET_ARN,
    "database_ca_bundle": str(REPO_ROOT / "tests" / "cdk" / "test-database-ca.pem"),  # a certificate, no key
}


def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]


# What every synthesis here adds to cdk.json: the CA choice a deploy command must make (database_ca_bundle is
# unset in cdk.json, and a synth without it fails); the variant ships a bundle instead.
PLAIN_CONTEXT: dict[str, Any] = {"database_ca_bundle": "runtime"}


@dataclass(frozen=True)
class Synthesized:
    stack: PipelineStack
    assembly: cx_api.CloudAssembly
    template: Template
    template_json: dict[str, Any]
    outdir: Path

    @property
    def resources_json(self) -> dict[str, dict[str, Any]]:
        return self.template_json["Resources"]

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.resources_json.items()
            if resource["Type"] == resource_type
        }

    def properties(self, logical: str) -> dict[str, Any]:
        return self.resources_json[logical]["Properties"]

    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.outdir / "validation-report.json").read_text(encoding="utf-8"))

    def plugin_report(self, name: str) -> dict[str, Any]:
        (report,) = [r for r in self.validation_report()["pluginReports"] if r["pluginName"] == name]
        return report

    def logical_id(self, construct: Any) -> str:
        return self.stack.resolve(self.stack.get_logical_id(construct.node.default_child))

    def function_ids(self) -> dict[str, str]:
        """Stage name -> logical id of its Lambda function, found by handler."""
        by_handler = {
            resource["Properties"]["Handler"]: logical
            for logical, resource in self.resources("AWS::Lambda::Function").items()
        }
        return {stage: by_handler[handler] for stage, handler in HANDLERS.items()}

    def bucket_ids(self) -> dict[str, str]:
        storage = self.stack.storage
        return {
            "ingestion": self.logical_id(storage.ingestion_bucket),
            "processed": self.logical_id(storage.processed_bucket),
            "access_logs": self.logical_id(storage.access_logs_bucket),
        }

    def topic_id(self) -> str:
        (topic,) = self.resources("AWS::SNS::Topic")
        return topic

    def state_machine(self, workflow: str | None = None) -> tuple[str, dict[str, Any]]:
        """The parent state machine, or its ``workflow`` ('express', 'standard') child."""
        suffix = "-pipeline" if workflow is None else f"-{workflow}"
        ((logical, resource),) = [
            (logical, resource)
            for logical, resource in self.resources("AWS::StepFunctions::StateMachine").items()
            if resource["Properties"]["StateMachineName"].endswith(suffix)
        ]
        return logical, resource["Properties"]

    def role_statements(self, role_id: str) -> list[dict[str, Any]]:
        """All statements of the inline (AWS::IAM::Policy) policies attached to a role."""
        statements = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
        return statements

    def function_statements(self, function_logical_id: str) -> list[dict[str, Any]]:
        role_id = self.properties(function_logical_id)["Role"]["Fn::GetAtt"][0]
        assert "ManagedPolicyArns" not in self.properties(role_id), "no managed policies: all access is explicit"
        return self.role_statements(role_id)

    def deployed_definition(self, workflow: str | None = None) -> dict[str, Any]:
        """The definition as Step Functions will see it: the asset file with DefinitionSubstitutions applied.

        Each substitution is a CloudFormation expression; it is rendered as ``<ref:LogicalId.Arn>`` so that the
        result can be compared as parsed JSON.
        """
        _, properties = self.state_machine(workflow)
        key = properties["DefinitionS3Location"]["Key"]
        text = (self.outdir / f"asset.{key}").read_text(encoding="utf-8")
        for name, value in properties["DefinitionSubstitutions"].items():
            rendered = f"<ref:{value['Ref']}>" if "Ref" in value else "<ref:{}.{}>".format(*value["Fn::GetAtt"])
            text = text.replace("${" + name + "}", rendered)
        return json.loads(text)


def synthesize(context: dict[str, Any], outdir: Path) -> Synthesized:
    """Build the app as app.py does and synthesize it; any cdk-nag finding makes ``app.synth()`` raise."""
    app = cdk.App(context=context, outdir=str(outdir))
    stack = build_app(app)
    assembly = app.synth()
    template_json = assembly.get_stack_by_name(stack.stack_name).template
    return Synthesized(stack, assembly, Template.from_json(template_json), template_json, outdir)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def rendered(value: Any) -> str:
    """A CloudFormation value as one string: Refs and GetAtts become '<ref:Id>' / '<ref:Id.Attr>'."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return f"<ref:{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<ref:{}.{}>".format(*value["Fn::GetAtt"])
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(rendered(part) for part in parts)
    return json.dumps(value, sort_keys=True)


def object_patterns(statements: list[dict[str, Any]], bucket_id: str) -> dict[str, set[str]]:
    """Object key pattern -> S3 actions granted on it, for one bucket (by logical id)."""
    prefix = f"<ref:{bucket_id}.Arn>/"
    granted: dict[str, set[str]] = {}
    for statement in statements:
        actions = [a for a in as_list(statement["Action"]) if a.startswith("s3:")]
        if not actions:
            continue
        for resource in as_list(statement["Resource"]):
            text = rendered(resource)
            if text.startswith(prefix):
                granted.setdefault(text.removeprefix(prefix), set()).update(actions)
            elif text == f"<ref:{bucket_id}.Arn>":
                granted.setdefault("", set()).update(actions)
    return granted


def bucket_references(statements: list[dict[str, Any]]) -> set[str]:
    """Logical ids of the buckets that any S3 statement refers to."""
    found: set[str] = set()
    for statement in statements:
        if any(a.startswith("s3:") for a in as_list(statement["Action"])):
            found |= set(re.findall(r'"Fn::GetAtt": \["([A-Za-z0-9]+)", "Arn"\]', json.dumps(statement)))
    return found

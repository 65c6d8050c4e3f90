"""The one stack of the totesys ETL pipeline: composes the constructs and wires every permission between them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Annotations, ArnFormat, CfnOutput, Environment, Fn, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from analytics.datasets import DATA_SETS
from cdk.config import DatabaseNetwork, PipelineConfig
from cdk.endpoints import VpcEndpoints
from cdk.functions import FunctionNetwork, PipelineFunctions
from cdk.monitoring import AlertTopic, Monitoring
from cdk.nag import acknowledge, acknowledge_warning, as_nag_prints
from cdk.quicksight import WarehouseDashboard
from cdk.storage import Storage
from cdk.workflow import (
    MAX_EXECUTION_SECONDS,
    Workflow,
    asl_timeout_seconds,
    child_state_machine_name,
    pipeline_state_machine_name,
)
from lambdas.common import keys
from lambdas.common.tables import FACTS, SOURCE_TABLES, WAREHOUSE_TABLES

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PACKAGE_DIR = REPO_ROOT / "lambdas"
DEFINITION_FILE = REPO_ROOT / "statemachine" / "pipeline.asl.json"
STAGES_DEFINITION_FILE = REPO_ROOT / "statemachine" / "stages.asl.json"

R = logs.RetentionDays
RETENTION_BY_DAYS = {
    1: R.ONE_DAY,
    3: R.THREE_DAYS,
    5: R.FIVE_DAYS,
    7: R.ONE_WEEK,
    14: R.TWO_WEEKS,
    30: R.ONE_MONTH,
    60: R.TWO_MONTHS,
    90: R.THREE_MONTHS,
    120: R.FOUR_MONTHS,
    150: R.FIVE_MONTHS,
    180: R.SIX_MONTHS,
    365: R.ONE_YEAR,
    400: R.THIRTEEN_MONTHS,
    545: R.EIGHTEEN_MONTHS,
    731: R.TWO_YEARS,
    1096: R.THREE_YEARS,
    1827: R.FIVE_YEARS,
    2192: R.SIX_YEARS,
    2557: R.SEVEN_YEARS,
    2922: R.EIGHT_YEARS,
    3288: R.NINE_YEARS,
    3653: R.TEN_YEARS,
}

# The S3 actions of the handlers, exactly: they read and write objects by key; only the lease deletes, its
# one object. No handler lists, but a role that reads a bucket may s3:ListBucket on it: without that, S3
# answers a GetObject of a missing key (a head not written yet) with 403 AccessDenied instead of 404.
READ = ("s3:GetObject",)
READ_WRITE = ("s3:GetObject", "s3:PutObject")
LEASE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
LIST = ("s3:ListBucket",)

# The lease expires this long after the execution timeout, so it never expires under a live execution.
LEASE_TTL_MARGIN_SECONDS = 300

BATCH_KEYS_REASON = (
    "A table's batch log is '<table>/<seq>/part-<n>-<token>.parquet' plus '<table>/<seq>/_manifest.json', "
    "with a new seq and random token per batch, so its object keys cannot be listed in advance; the wildcard "
    "stops at the one table prefix, and only s3:GetObject/s3:PutObject (no Delete) are granted on it."
)
EXECUTIONS_REASON = (
    "Execution ARNs are created per run ('arn:...:execution:<state machine name>:<run name>'); the wildcard "
    "covers the executions of this stack's one state machine only."
)


def substitution_name(stage: str) -> str:
    """The ASL placeholder of a stage's function ARN: 'extract' -> 'ExtractFunctionArn'."""
    return f"{stage.capitalize()}FunctionArn"


def lease_ttl_seconds(execution_timeout_seconds: int | None) -> int:
    """How long a run lease lasts: longer than an execution may run (a year without a TimeoutSeconds)."""
    return (execution_timeout_seconds or MAX_EXECUTION_SECONDS) + LEASE_TTL_MARGIN_SECONDS


class PipelineStack(Stack):
    def __init__(self, scope: Construct, *, config: PipelineConfig) -> None:
        super().__init__(
            scope,
            config.stack_name,
            env=Environment(region=config.region, account=config.account),
            description="Totesys ETL: extract from totesys, remodel into a star schema, load the warehouse",
        )
        Tags.of(self).add("project", "totesys-etl")
        self.config = config
        log_retention = RETENTION_BY_DAYS[config.log_retention_days]
        # Known before the state machine exists: the lease role's DescribeExecution grant is built from it.
        self.state_machine_name = pipeline_state_machine_name(self.stack_name)
        self.execution_arns = self.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

        self.storage = Storage(
            self,
            "Storage",
            ingestion_tables=SOURCE_TABLES,
            processed_tables=WAREHOUSE_TABLES,
            retention=config.retention,
        )
        self.alerts = AlertTopic(self, "Alerts", alert_emails=config.alert_emails)
        database_network = self._database_network(config.network)
        self.endpoints = (
            VpcEndpoints(
                self,
                "Endpoints",
                vpc=database_network.vpc,
                network=config.network,
                route_table_ids=config.route_table_ids,
                tracing=config.tracing,
            )
            if database_network is not None and config.network is not None and config.route_table_ids
            else None
        )
        self.functions = PipelineFunctions(
            self,
            "Functions",
            package_dir=LAMBDA_PACKAGE_DIR,
            ingestion_bucket_name=self.storage.ingestion_bucket.bucket_name,
            processed_bucket_name=self.storage.processed_bucket.bucket_name,
            totesys_secret_name=config.totesys_secret_name,
            warehouse_secret_name=config.warehouse_secret_name,
            alert_topic_arn=self.alerts.topic.topic_arn,
            log_retention=log_retention,
            extract_reserved_concurrency=config.max_source_connections if config.reserve_extract_concurrency else None,
            extract_lookback_seconds=config.extract_lookback_seconds,
            extract_signal_max_age_seconds=config.extract_signal_max_age_seconds,
            extract_partition_rows=config.extract_partition_rows,
            held_stuck_after_seconds=config.held_stuck_after_seconds,
            # The Workflow reads the same TimeoutSeconds, but it is built after the functions it invokes.
            lease_ttl_seconds=lease_ttl_seconds(asl_timeout_seconds(DEFINITION_FILE)),
            tracing=config.tracing,
            database_network=database_network,
            database_ca_bundle=config.database_ca_bundle,
            totesys_location=config.totesys_location,
            warehouse_location=config.warehouse_location,
        )
        self.workflow = Workflow(
            self,
            "Workflow",
            definition_file=DEFINITION_FILE,
            stages_definition_file=STAGES_DEFINITION_FILE,
            state_machine_name=self.state_machine_name,
            substitutions={
                substitution_name(stage): function.function_arn for stage, function in self.functions.by_stage.items()
            },
            schedule_expression=config.schedule,
            schedule_input=config.schedule_input,
            reconcile_schedule_expression=config.reconcile_schedule,
            reconcile_input=config.reconcile_input,
            log_retention=log_retention,
            tracing=config.tracing,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            workflow=self.workflow,
            functions=self.functions,
            topic=self.alerts.topic,
            fact_tables=FACTS,
            dashboard=config.dashboard,
        )
        # QuickSight over the warehouse, only with a principal to share it with (it needs a subscription).
        self.quicksight = (
            WarehouseDashboard(
                self,
                "QuickSight",
                name_prefix=config.stack_name,
                data_sets=DATA_SETS,
                warehouse_secret_arn=config.quicksight.warehouse_secret_arn,
                principal_arn=config.quicksight.principal_arn,
                network=config.network,
                location=config.warehouse_location,
            )
            if config.quicksight
            else None
        )
        self.operators_policy = iam.ManagedPolicy(
            self,
            "OperatorsPolicy",
            description="Lets operators start, stop, inspect and redrive executions of the totesys ETL pipeline",
        )

        self._grant_permissions()
        self._check_source_connections()
        self._outputs()

    def _database_network(self, network: DatabaseNetwork | None) -> FunctionNetwork | None:
        """The databases' VPC, subnets and security groups, imported by id: no lookup, so synth stays offline."""
        if network is None:
            return None
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "DatabaseVpc",
            vpc_id=network.vpc_id,
            # Fn::GetAZs, resolved by CloudFormation (Stack.availability_zones would need a context lookup once
            # an account is set). Only used to pick subnets by type, which never happens: they are given by id.
            availability_zones=Fn.get_azs(),
        )
        acknowledge_warning(
            vpc,
            "@aws-cdk/aws-ec2:vpcAttributeIsListTokenavailabilityZones",
            reason="The functions' subnets are given by id, so no construct selects subnets by availability zone.",
        )
        subnets = []
        for index, subnet_id in enumerate(network.subnet_ids):
            subnet = ec2.Subnet.from_subnet_id(self, f"DatabaseSubnet{index}", subnet_id)
            acknowledge_warning(
                subnet,
                "@aws-cdk/aws-ec2:noSubnetRouteTableId",
                reason="The subnet only goes into the functions' VpcConfig; nothing reads its route table.",
            )
            subnets.append(subnet)
        return FunctionNetwork(
            vpc=vpc,
            subnets=subnets,
            security_groups=[
                ec2.SecurityGroup.from_security_group_id(self, f"DatabaseSecurityGroup{index}", group_id, mutable=False)
                for index, group_id in enumerate(network.security_group_ids)
            ],
        )

    def _grant_permissions(self) -> None:
        """Every data permission of the pipeline, in one place."""
        ingestion = self.storage.ingestion_bucket
        processed = self.storage.processed_bucket
        functions = self.functions

        # extract: writes new batches of the source tables and moves its heads in the ingestion bucket; it
        # reads its own heads (watermarks) back. Reads the totesys secret.
        # A reconciliation keeps a checkpoint per table (a head and the latest rows it compared).
        reconcile_checkpoints = [keys.under(keys.reconcile_prefix(table)) for table in SOURCE_TABLES]
        self._allow_objects(
            functions.extract,
            ingestion,
            READ_WRITE,
            [
                *_batch_logs(SOURCE_TABLES),
                *_heads("extract", SOURCE_TABLES),
                *_heads(keys.RECONCILE_STAGE, SOURCE_TABLES),
                *reconcile_checkpoints,
            ],
            reasons={
                key: "A reconciliation checkpoint is "
                f"'{keys.reconcile_prefix('<table>')}<seq>-<token>.parquet', a new key per reconciliation; the "
                "wildcard stops at the one table prefix, and only s3:GetObject/s3:PutObject (no Delete) are granted."
                for key in reconcile_checkpoints
            },
        )
        # ... and plans each run (lambdas/extract/run_plan.py): it reads, never writes, the transform heads and the
        # load cursors, to find the work earlier runs left. One pattern per stage keeps the role's policy inline.
        stage_heads = {stage: keys.head_key(stage, "*") for stage in ("transform", "load")}
        self._allow_objects(
            functions.extract,
            processed,
            READ,
            list(stage_heads.values()),
            reasons={
                key: f"The run plan reads the {stage} head of every warehouse table "
                f"('{keys.head_key(stage, '<table>')}'); only s3:GetObject is granted, and the wildcard stops at that "
                "stage's heads."
                for stage, key in stage_heads.items()
            },
        )
        self._allow_listing(functions.extract, ingestion, processed)
        self._allow_secret(functions.extract, self.config.totesys_secret_name)

        # transform: reads the extract batches and heads; writes the star-schema batch logs, the joined
        # dimensions' _current/ snapshots and its own heads in the processed bucket, and reads them back.
        self._allow_objects(
            functions.transform,
            ingestion,
            READ,
            [*_batch_logs(SOURCE_TABLES), *_heads("extract", SOURCE_TABLES)],
        )
        self._allow_objects(
            functions.transform,
            processed,
            READ_WRITE,
            [*_batch_logs(WAREHOUSE_TABLES), keys.under(keys.current_prefix()), *_heads("transform", WAREHOUSE_TABLES)],
            reasons={
                keys.under(keys.current_prefix()): "The joined dimensions keep the current rows of each source in "
                f"'{keys.current_key('<table>', '<source>', 0)}', a new key per transform batch; only "
                "s3:GetObject/s3:PutObject (no Delete) are granted under that prefix."
            },
        )
        self._allow_listing(functions.transform, ingestion, processed)

        # load: reads the star-schema batches and the transform heads; moves only its own load cursors.
        self._allow_objects(
            functions.load,
            processed,
            READ,
            [*_batch_logs(WAREHOUSE_TABLES), *_heads("transform", WAREHOUSE_TABLES)],
        )
        self._allow_objects(functions.load, processed, READ_WRITE, _heads("load", WAREHOUSE_TABLES))
        # ... and the facts' held rows: new immutable objects named by the load heads, read back by later loads.
        held_sets = [keys.under(keys.held_prefix(fact)) for fact in FACTS]
        self._allow_objects(
            functions.load,
            processed,
            READ_WRITE,
            held_sets,
            reasons={
                key: "A fact load stores the rows it holds back for a missing dimension row as a new object "
                f"'{keys.held_prefix('<fact>')}<seq>-<token>.parquet' per load; only s3:GetObject/s3:PutObject are "
                "granted."
                for key in held_sets
            },
        )
        # ... and a reconciliation's verification of the warehouse keeps a checkpoint per table (a head and a ledger).
        verify_ledgers = [keys.under(keys.verify_prefix(table)) for table in WAREHOUSE_TABLES]
        self._allow_objects(
            functions.load,
            processed,
            READ_WRITE,
            [*_heads(keys.VERIFY_STAGE, WAREHOUSE_TABLES), *verify_ledgers],
            reasons={
                key: "A verification's ledger is "
                f"'{keys.verify_prefix('<table>')}<seq>-<token>.parquet', a new key per verification; the wildcard "
                "stops at the one table prefix, and only s3:GetObject/s3:PutObject (no Delete) are granted."
                for key in verify_ledgers
            },
        )
        self._allow_listing(functions.load, processed)
        self._allow_secret(functions.load, self.config.warehouse_secret_name)

        # report: e-mails the failed tables of a run through the alerts topic; no data access. It gives the run
        # lease back (reads and deletes the one lease object; never takes it).
        self.alerts.topic.grant_publish(functions.report)
        self._allow_objects(functions.report, ingestion, ("s3:GetObject", "s3:DeleteObject"), [keys.lease_key()])
        self._allow_listing(functions.report, ingestion)

        # lease: creates, reads, replaces (conditional writes) and deletes the one lease object; asks Step
        # Functions whether the holder of a lease is still running. The execution ARNs are built from the
        # state machine's fixed name, not from the state machine, which depends on this function's ARN.
        self._allow_objects(functions.lease, ingestion, LEASE_ACTIONS, [keys.lease_key()])
        self._allow_listing(functions.lease, ingestion)
        functions.lease.add_to_role_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[self.execution_arns])
        )
        acknowledge(
            functions.lease.role,
            f"AwsSolutions-IAM5[Resource::{as_nag_prints(self, self.execution_arns)}]",
            reason=EXECUTIONS_REASON + " The lease function only calls states:DescribeExecution on them, to "
            "tell whether the run holding the lease is still running.",
        )

        # Each state machine may invoke the functions its definition names (cdk/workflow.py), by their unqualified
        # ARNs only, so no version/alias wildcard (":*") is granted.

        # Operators (attach the managed policy to their role or permission set): run, stop, inspect, redrive.
        state_machine = self.workflow.state_machine
        policy = self.operators_policy
        state_machine.grant_start_execution(policy)
        state_machine.grant(policy, "states:DescribeStateMachine", "states:ListExecutions")
        policy.add_statements(
            iam.PolicyStatement(
                actions=[
                    "states:DescribeExecution",
                    "states:GetExecutionHistory",
                    "states:StopExecution",
                    "states:RedriveExecution",
                ],
                resources=[self.execution_arns],
            )
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{as_nag_prints(self, self.execution_arns)}]",
            reason=EXECUTIONS_REASON,
        )
        # ... and look into, stop and redrive the Standard child that runs the tables' work of heavy runs and re-runs
        # (the Express child keeps no executions to look into: its log group has them).
        standard_child = self.workflow.children["standard"]
        standard_child.grant(policy, "states:DescribeStateMachine", "states:ListExecutions")
        child_executions = self.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{child_state_machine_name(self.state_machine_name, 'standard')}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        policy.add_statements(
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution",
                         "states:RedriveExecution"],
                resources=[child_executions],
            )
        )  # fmt: skip
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{as_nag_prints(self, child_executions)}]",
            reason="Execution ARNs are created per run (a UUID each); the wildcard covers the executions of this "
            "stack's Standard child state machine only.",
        )

    def _allow_objects(
        self,
        function: lambda_.Function,
        bucket: s3.IBucket,
        actions: Sequence[str],
        keys: Sequence[str],
        *,
        reasons: dict[str, str] | None = None,
    ) -> None:
        """Allow object-level ``actions`` on exactly ``keys`` of ``bucket``; acknowledge each wildcard key."""
        function.add_to_role_policy(
            iam.PolicyStatement(actions=list(actions), resources=[bucket.arn_for_objects(key) for key in keys])
        )
        for key in keys:
            if "*" in key:
                acknowledge(
                    function.role,
                    f"AwsSolutions-IAM5[Resource::{self._objects(bucket, key)}]",
                    reason=(reasons or {}).get(key, BATCH_KEYS_REASON),
                )

    def _allow_listing(self, function: lambda_.Function, *buckets: s3.IBucket) -> None:
        """Allow s3:ListBucket on ``buckets`` (the bucket ARNs), so that S3 answers a missing key with 404.

        No prefix condition: S3 checks ListBucket on the bucket, without one, to choose between 403 and 404.
        """
        function.add_to_role_policy(iam.PolicyStatement(actions=list(LIST), resources=[b.bucket_arn for b in buckets]))

    def _allow_secret(self, function: lambda_.Function, secret_name: str) -> None:
        """GetSecretValue on one secret, by name: '-??????' matches the random suffix Secrets Manager adds."""
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[
                    self.format_arn(
                        service="secretsmanager",
                        resource="secret",
                        resource_name=f"{secret_name}-??????",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )

    def _objects(self, bucket: s3.IBucket, key_pattern: str) -> str:
        """An object ARN pattern as cdk-nag prints it in a finding id, e.g. '<StorageBucketABC123.Arn>/t/*'."""
        logical_id = self.resolve(self.get_logical_id(bucket.node.default_child))
        return f"<{logical_id}.Arn>/{key_pattern}"

    def _check_source_connections(self) -> None:
        """Warn when the extract Map runs more tables at once than extract may run: the rest wait on throttles."""
        definition = json.loads(STAGES_DEFINITION_FILE.read_text(encoding="utf-8"))
        placeholder = "${" + substitution_name("extract") + "}"
        for name, state in definition.get("States", {}).items():
            if state.get("Type") == "Map" and placeholder in json.dumps(state.get("ItemProcessor", {})):
                concurrency = state.get("MaxConcurrency", 0)
                if concurrency == 0 or concurrency > self.config.max_source_connections:
                    Annotations.of(self.functions.extract).add_warning_v2(
                        "totesys:source-connections",
                        f"'{name}' runs {concurrency or 'unlimited'} extracts at once, more than "
                        f"max_source_connections={self.config.max_source_connections}: the others are throttled "
                        "and wait on the workflow's Lambda.TooManyRequestsException retries.",
                    )

    def _outputs(self) -> None:
        outputs = {
            "IngestionBucketName": self.storage.ingestion_bucket.bucket_name,
            "ProcessedBucketName": self.storage.processed_bucket.bucket_name,
            "StateMachineArn": self.workflow.state_machine.state_machine_arn,
            "AlertTopicArn": self.alerts.topic.topic_arn,
            "OperatorsPolicyArn": self.operators_policy.managed_policy_arn,
        }
        if self.monitoring.dashboard:
            outputs["DashboardName"] = self.monitoring.dashboard.dashboard_name
        if self.quicksight:
            outputs["QuickSightDashboardId"] = self.quicksight.dashboard.dashboard_id
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)


def _batch_logs(tables: Sequence[str]) -> list[str]:
    return [keys.under(keys.table_prefix(table)) for table in tables]


def _heads(stage: str, tables: Sequence[str]) -> list[str]:
    return [keys.head_key(stage, table) for table in tables]

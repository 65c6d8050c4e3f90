"""The one stack of the totesys ETL pipeline: composes the constructs and wires every permission between them."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Environment, Stack, Tags
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk.config import PipelineConfig
from cdk.functions import PipelineFunctions
from cdk.monitoring import Monitoring
from cdk.nag import acknowledge
from cdk.storage import Storage
from cdk.workflow import Workflow

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PACKAGE_DIR = REPO_ROOT / "lambdas"
DEFINITION_FILE = REPO_ROOT / "statemachine" / "pipeline.asl.json"

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


class PipelineStack(Stack):
    def __init__(self, scope: Construct, *, config: PipelineConfig) -> None:
        super().__init__(
            scope,
            config.stack_name,
            env=Environment(region=config.region, account=config.account),
            description="Totesys ETL: extract from totesys, remodel into a star schema, load the warehouse",
        )
        Tags.of(self).add("project", "totesys-etl")
        log_retention = RETENTION_BY_DAYS[config.log_retention_days]

        self.storage = Storage(self, "Storage")
        totesys_secret = secretsmanager.Secret.from_secret_name_v2(self, "TotesysSecret", config.totesys_secret_name)
        warehouse_secret = secretsmanager.Secret.from_secret_name_v2(
            self, "WarehouseSecret", config.warehouse_secret_name
        )
        self.functions = PipelineFunctions(
            self,
            "Functions",
            package_dir=LAMBDA_PACKAGE_DIR,
            ingestion_bucket_name=self.storage.ingestion_bucket.bucket_name,
            processed_bucket_name=self.storage.processed_bucket.bucket_name,
            totesys_secret_name=config.totesys_secret_name,
            warehouse_secret_name=config.warehouse_secret_name,
            log_retention=log_retention,
            powertools_layer_version=config.powertools_layer_version,
            pandas_layer_version=config.pandas_layer_version,
        )
        self.workflow = Workflow(
            self,
            "Workflow",
            definition_file=DEFINITION_FILE,
            substitutions={
                "ExtractFunctionArn": self.functions.extract.function_arn,
                "TransformFunctionArn": self.functions.transform.function_arn,
                "LoadFunctionArn": self.functions.load.function_arn,
            },
            schedule=events.Schedule.expression(config.schedule),
            log_retention=log_retention,
        )
        self.monitoring = Monitoring(self, "Monitoring", workflow=self.workflow, alert_emails=config.alert_emails)

        self._grant_permissions(totesys_secret=totesys_secret, warehouse_secret=warehouse_secret)

    def _grant_permissions(
        self, *, totesys_secret: secretsmanager.ISecret, warehouse_secret: secretsmanager.ISecret
    ) -> None:
        """Every data permission of the pipeline, in one place."""
        ingestion = self.storage.ingestion_bucket
        processed = self.storage.processed_bucket
        extract, transform, load = self.functions.all

        # extract: reads its watermarks and writes new batches in the ingestion bucket; reads totesys.
        ingestion.grant_read_write(extract)
        totesys_secret.grant_read(extract)

        # transform: reads ingestion batches, reads and writes the star-schema tables.
        ingestion.grant_read(transform)
        processed.grant_read_write(transform)

        # load: reads the star-schema tables, writes only its own state objects; reads the warehouse secret.
        processed.grant_read(load)
        processed.grant_put(load, "_state/load/*")
        warehouse_secret.grant_read(load)

        # The workflow invokes the functions by their unqualified ARNs only (see pipeline.asl.json), so no
        # version/alias wildcard (":*") is granted.
        self.workflow.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[function.function_arn for function in self.functions.all],
            )
        )

        # The bucket grants above use CDK's S3 action families and object wildcards; each is confined to this
        # pipeline's own buckets, as listed per role.
        reason = (
            "CDK bucket grants: the S3 action families (s3:GetObject*, s3:List*, s3:GetBucket*, plus "
            "s3:DeleteObject* and s3:Abort* for writers) cover the object reads, HEADs, listings, multipart "
            "uploads and overwrites that awswrangler/boto3 perform, and apply only to the objects of the "
            "pipeline's own buckets granted here."
        )
        acknowledge(
            extract.role,
            "AwsSolutions-IAM5[Action::s3:Abort*]",
            "AwsSolutions-IAM5[Action::s3:DeleteObject*]",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]",
            "AwsSolutions-IAM5[Action::s3:GetObject*]",
            "AwsSolutions-IAM5[Action::s3:List*]",
            f"AwsSolutions-IAM5[Resource::{self._objects(ingestion)}]",
            reason=reason,
        )
        acknowledge(
            transform.role,
            "AwsSolutions-IAM5[Action::s3:Abort*]",
            "AwsSolutions-IAM5[Action::s3:DeleteObject*]",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]",
            "AwsSolutions-IAM5[Action::s3:GetObject*]",
            "AwsSolutions-IAM5[Action::s3:List*]",
            f"AwsSolutions-IAM5[Resource::{self._objects(ingestion)}]",
            f"AwsSolutions-IAM5[Resource::{self._objects(processed)}]",
            reason=reason,
        )
        acknowledge(
            load.role,
            "AwsSolutions-IAM5[Action::s3:Abort*]",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]",
            "AwsSolutions-IAM5[Action::s3:GetObject*]",
            "AwsSolutions-IAM5[Action::s3:List*]",
            f"AwsSolutions-IAM5[Resource::{self._objects(processed)}]",
            f"AwsSolutions-IAM5[Resource::{self._objects(processed, '_state/load/*')}]",
            reason=reason,
        )

    def _objects(self, bucket: s3.IBucket, key_pattern: str = "*") -> str:
        """An object ARN pattern as cdk-nag prints it in a finding id, e.g. '<StorageBucketABC123.Arn>/*'."""
        logical_id = self.resolve(self.get_logical_id(bucket.node.default_child))
        return f"<{logical_id}.Arn>/{key_pattern}"

"""The five pipeline Lambda functions, their code asset, managed layers, roles and log groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import AssetHashType, BundlingOptions, Duration, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.bundling import LocalPythonBundler
from cdk.nag import acknowledge
from cdk.wheels import LambdaPlatform, lambda_wheels, pins, pure_requirements
from lambdas.common.db import CA_BUNDLE_ENV
from lambdas.extract.partitioned import PARTITION_ROWS_ENV
from lambdas.extract.signal import MAX_AGE_ENV as SIGNAL_MAX_AGE_ENV
from lambdas.load.held import STUCK_AFTER_ENV

# The newest Python runtime that this CDK release knows and both managed layers are published for.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.X86_64

# Publishers of the managed layers (same account in every commercial region).
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
PANDAS_LAYER_ACCOUNT = "336392948345"

# Pure-Python distributions bundled into the function code (with their installed dependency closure).
BUNDLED_REQUIREMENTS = ("pg8000", "iso4217")
# The extract function's asset also holds the native distributions of cdk/lambda-wheels.txt (ADBC's PostgreSQL
# driver, for its bulk read), as their wheels for this runtime and architecture; the others do without them.
WHEEL_STAGES = ("extract",)

# Powertools Metrics namespace of the pipeline's own metrics (the load's, the report's and the extract's; docs/cost.md).
METRICS_NAMESPACE = "TotesysEtl"
# Where the deployment's database CA bundle sits in the function (the asset is unpacked in /var/task).
CA_BUNDLE_FILE = "database-ca-bundle.pem"
CA_BUNDLE_PATH = f"/var/task/{CA_BUNDLE_FILE}"

# The lease is taken first and released last in a run, but it is not a data stage: it comes last here.
STAGES = ("extract", "transform", "load", "report", "lease")

# What a function needs to create, describe and delete its network interfaces in the database subnets
# (the actions of the AWSLambdaVPCAccessExecutionRole managed policy). Lambda checks them on "*".
VPC_ACCESS_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)


def service_name(stage: str) -> str:
    """POWERTOOLS_SERVICE_NAME of a stage, also the ``service`` dimension of its metrics."""
    return f"totesys-{stage}"


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    memory_size: int
    timeout: Duration


DEFAULT_STAGE_SETTINGS = {
    "extract": StageSettings(memory_size=1024, timeout=Duration.minutes(5)),
    "transform": StageSettings(memory_size=2048, timeout=Duration.minutes(10)),
    "load": StageSettings(memory_size=1024, timeout=Duration.minutes(10)),
    "report": StageSettings(memory_size=256, timeout=Duration.minutes(1)),
    "lease": StageSettings(memory_size=256, timeout=Duration.minutes(1)),
}


@dataclass(frozen=True, kw_only=True)
class FunctionNetwork:
    """The private subnets and security groups from which the databases are reachable."""

    vpc: ec2.IVpc
    subnets: Sequence[ec2.ISubnet]
    security_groups: Sequence[ec2.ISecurityGroup]


def python_tag(runtime: lambda_.Runtime) -> str:
    """'python3.14' -> 'python314', as used in the managed layer names."""
    return runtime.name.replace(".", "")


def powertools_layer_arn(
    *, region: str, runtime: lambda_.Runtime, architecture: lambda_.Architecture, version: int
) -> str:
    arch = "arm64" if architecture.name == lambda_.Architecture.ARM_64.name else "x86_64"
    return (
        f"arn:aws:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{python_tag(runtime)}-{arch}:{version}"
    )


def pandas_layer_arn(*, region: str, runtime: lambda_.Runtime, architecture: lambda_.Architecture, version: int) -> str:
    suffix = "-Arm64" if architecture.name == lambda_.Architecture.ARM_64.name else ""
    name = python_tag(runtime).replace("python", "Python")
    return f"arn:aws:lambda:{region}:{PANDAS_LAYER_ACCOUNT}:layer:AWSSDKPandas-{name}{suffix}:{version}"


def _code(
    package_dir: Path, requirements: Sequence[str], extra_files: dict[str, Path] | None, wheels: Sequence[Path] = ()
) -> lambda_.AssetCode:
    return lambda_.Code.from_asset(
        str(package_dir),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            image=RUNTIME.bundling_image,
            # Part of the CDK's key for reusing a bundle made from the same directory: assets with other wheels
            # must not share one. (Docker bundling, which this replaces, would see it as an environment variable.)
            environment={"BUNDLED_WHEELS": " ".join(wheel.name for wheel in wheels)},
            local=LocalPythonBundler(
                package_dir=package_dir,
                requirements=requirements,
                extra_files=extra_files,
                python_version=RUNTIME.name.removeprefix("python"),
                wheels=wheels,
            ),
        ),
    )


class PipelineFunctions(Construct):
    """Extract, transform, load, report and lease functions with the managed layers and their code assets: one
    shared by all but extract, whose own also holds the native wheels of its bulk read (WHEEL_STAGES).

    Each function gets its own role (CloudWatch Logs access to its own log group only; data access is
    granted by the stack) and its own log group with the given retention. Extract's reserved concurrency is
    ``max_source_connections``: each invocation holds one totesys connection, and a second one during its bulk
    read (lambdas/extract/bulk.py), so the pipeline never holds more than twice that, however many executions
    overlap. With ``database_network``, extract and load (the two
    functions that reach a database) run in those subnets with those security groups.

    The lease function lets one run go at a time (``lambdas/lease``); a lease it takes expires after
    ``lease_ttl_seconds``, which must be longer than any execution can last.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        package_dir: Path,
        ingestion_bucket_name: str,
        processed_bucket_name: str,
        totesys_secret_name: str,
        warehouse_secret_name: str,
        alert_topic_arn: str,
        log_retention: logs.RetentionDays,
        powertools_layer_version: int,
        pandas_layer_version: int,
        max_source_connections: int,
        extract_lookback_seconds: int,
        extract_signal_max_age_seconds: int,
        extract_partition_rows: int,
        held_stuck_after_seconds: int,
        lease_ttl_seconds: int,
        tracing: bool,
        database_network: FunctionNetwork | None = None,
        database_ca_bundle: Path | None = None,
        bundled_requirements: Sequence[str] = BUNDLED_REQUIREMENTS,
        stage_settings: dict[str, StageSettings] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        if Token.is_unresolved(region):
            raise ValueError("the stack needs a concrete region to form the managed layer ARNs")
        settings = {**DEFAULT_STAGE_SETTINGS, **(stage_settings or {})}
        self._log_retention = log_retention
        self._tracing = tracing

        extra_files = {CA_BUNDLE_FILE: database_ca_bundle} if database_ca_bundle else None
        self.code = _code(package_dir, bundled_requirements, extra_files)
        locked = pins()
        wheels = lambda_wheels(LambdaPlatform.of(RUNTIME.name, ARCHITECTURE.name), locked)
        self.extract_code = _code(package_dir, [*bundled_requirements, *pure_requirements(locked)], extra_files, wheels)
        # With @aws-cdk/aws-lambda:recognizeLayerVersion the layers are rendered sorted by construct path:
        # AwsSdkPandasLayer first, then PowertoolsLayer, whose files win where the two overlap.
        self.powertools_layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            powertools_layer_arn(
                region=region, runtime=RUNTIME, architecture=ARCHITECTURE, version=powertools_layer_version
            ),
        )
        self.pandas_layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "AwsSdkPandasLayer",
            pandas_layer_arn(region=region, runtime=RUNTIME, architecture=ARCHITECTURE, version=pandas_layer_version),
        )
        data_layers = [self.powertools_layer, self.pandas_layer]
        buckets = {"INGESTION_BUCKET": ingestion_bucket_name, "PROCESSED_BUCKET": processed_bucket_name}
        # Both database clients verify the server (verify-full) against this bundle, else the runtime's CAs.
        tls = {CA_BUNDLE_ENV: CA_BUNDLE_PATH} if database_ca_bundle else {}

        self.extract = self._function(
            "Extract",
            stage="extract",
            settings=settings["extract"],
            layers=data_layers,
            description="Copies rows changed in totesys since the last watermark into the ingestion bucket.",
            environment={
                **buckets,
                "TOTESYS_SECRET_ID": totesys_secret_name,
                "EXTRACT_LOOKBACK_SECONDS": str(extract_lookback_seconds),
                SIGNAL_MAX_AGE_ENV: str(extract_signal_max_age_seconds),
                PARTITION_ROWS_ENV: str(extract_partition_rows),
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,  # DriftRows: without it, publishing raises
                **tls,
            },
            reserved_concurrency=max_source_connections,
            network=database_network,
        )
        self.transform = self._function(
            "Transform",
            stage="transform",
            settings=settings["transform"],
            layers=data_layers,
            description="Remodels new ingestion batches into the warehouse star schema in the processed bucket.",
            environment=buckets,
        )
        self.load = self._function(
            "Load",
            stage="load",
            settings=settings["load"],
            layers=data_layers,
            description="Loads processed star-schema tables into the warehouse.",
            environment={
                **buckets,
                "WAREHOUSE_SECRET_ID": warehouse_secret_name,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                STUCK_AFTER_ENV: str(held_stuck_after_seconds),
                **tls,
            },
            network=database_network,
        )
        # The report needs boto3 (in the runtime) and Powertools, not pandas/pyarrow: a lighter cold start.
        self.report = self._function(
            "Report",
            stage="report",
            settings=settings["report"],
            layers=[self.powertools_layer],
            description="Summarises each run's failed tables and e-mails them with the input that re-runs them.",
            environment={
                "ALERT_TOPIC_ARN": alert_topic_arn,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "INGESTION_BUCKET": ingestion_bucket_name,
            },  # the run lease it releases
        )
        # The lease is a few conditional S3 requests and one DescribeExecution: boto3 and Powertools only.
        self.lease = self._function(
            "Lease",
            stage="lease",
            settings=settings["lease"],
            layers=[self.powertools_layer],
            description="Takes the run lease when a run starts and releases it when it ends: one run at a time.",
            environment={"INGESTION_BUCKET": ingestion_bucket_name, "LEASE_TTL_SECONDS": str(lease_ttl_seconds)},
        )

    @property
    def all(self) -> tuple[lambda_.Function, ...]:
        return tuple(self.by_stage.values())

    @property
    def by_stage(self) -> dict[str, lambda_.Function]:
        """Stage name -> function, in the order of ``STAGES``."""
        return {stage: getattr(self, stage) for stage in STAGES}

    def _function(
        self,
        name: str,
        *,
        stage: str,
        settings: StageSettings,
        layers: Sequence[lambda_.ILayerVersion],
        description: str,
        environment: dict[str, str],
        reserved_concurrency: int | None = None,
        network: FunctionNetwork | None = None,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{name}Logs", retention=self._log_retention)
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs the totesys {stage} function",
        )
        # Instead of the AWSLambdaBasicExecutionRole managed policy: write to this function's log group only.
        log_group.grant_write(role)
        if network is not None:
            # Instead of the AWSLambdaVPCAccessExecutionRole managed policy; added before the function, which
            # depends on the role (and so on this policy): Lambda checks these permissions when it is created.
            role.add_to_principal_policy(iam.PolicyStatement(actions=list(VPC_ACCESS_ACTIONS), resources=["*"]))
        function = lambda_.Function(
            self,
            name,
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=f"lambdas.{stage}.handler.handler",
            code=self.extract_code if stage in WHEEL_STAGES else self.code,
            layers=list(layers),
            memory_size=settings.memory_size,
            timeout=settings.timeout,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE if self._tracing else lambda_.Tracing.DISABLED,
            reserved_concurrent_executions=reserved_concurrency,
            vpc=network.vpc if network else None,
            vpc_subnets=ec2.SubnetSelection(subnets=list(network.subnets)) if network else None,
            security_groups=list(network.security_groups) if network else None,
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": service_name(stage),
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
        )
        self._acknowledge(function, role, vpc=network is not None)
        return function

    def _acknowledge(self, function: lambda_.Function, role: iam.Role, *, vpc: bool) -> None:
        needs_any_resource = []
        if self._tracing:
            needs_any_resource.append("active X-Ray tracing needs xray:PutTraceSegments and xray:PutTelemetryRecords")
        if vpc:
            needs_any_resource.append(
                "running in the database subnets needs ec2:CreateNetworkInterface, ec2:DescribeNetworkInterfaces, "
                "ec2:DescribeSubnets, ec2:DeleteNetworkInterface and ec2:(Un)AssignPrivateIpAddresses"
            )
        if needs_any_resource:
            acknowledge(
                role,
                "AwsSolutions-IAM5[Resource::*]",
                reason="; ".join(needs_any_resource)
                + ": Lambda requires these actions on all resources (they support no resource-level scoping).",
            )
        acknowledge(
            function,
            "Serverless-LambdaDLQ",
            reason="Only the state machine invokes this function, synchronously (lambda:invoke task): a failed "
            "invocation is retried by the workflow, then caught and reported or it fails the execution (which the "
            "ExecutionsFailed alarm reports); a DLQ only receives asynchronous invocations, of which there are none.",
        )
        if not self._tracing:
            acknowledge(
                function,
                "Serverless-LambdaTracing",
                reason="X-Ray tracing is switched off for this deployment with the CDK context tracing=false "
                "(docs/deploy.md); it is on by default.",
            )

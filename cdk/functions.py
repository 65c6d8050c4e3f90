"""The five pipeline Lambda functions, their code asset, managed layers, roles and log groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import AssetHashType, BundlingOptions, Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from packaging.utils import parse_wheel_filename

from cdk.bundling import LAYER_PREFIX, LocalPythonBundler
from cdk.config import DatabaseLocation
from cdk.nag import acknowledge
from cdk.platform import ARCHITECTURE_NAME, PYTHON_VERSION, RUNTIME_NAME
from cdk.wheels import LambdaPlatform, lambda_wheels, pins
from lambdas.common.settings import (
    ExtractSettings,
    LeaseSettings,
    LoadSettings,
    MetricsSettings,
    ReportSettings,
    Settings,
    TransformSettings,
)

# CDK's names for the platform of cdk/platform.py (where the choice of runtime is explained).
RUNTIME = getattr(lambda_.Runtime, "PYTHON_" + PYTHON_VERSION.replace(".", "_"))
ARCHITECTURE = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}[ARCHITECTURE_NAME]

# What each asset holds, as distributions of constraints-lambda.txt (their wheels for RUNTIME and ARCHITECTURE):
# the function code of every stage, what only extract adds (ADBC's PostgreSQL driver, for its bulk read), and two
# layers shared by the functions that import them.
CODE_DISTRIBUTIONS = ("pg8000", "scramp", "asn1crypto", "python-dateutil", "six", "iso4217")
EXTRACT_DISTRIBUTIONS = ("adbc-driver-manager", "adbc-driver-postgresql", "importlib-resources")
ARROW_LAYER_DISTRIBUTIONS = ("pyarrow",)
POWERTOOLS_LAYER_DISTRIBUTIONS = (
    "aws-lambda-powertools",
    "aws-xray-sdk",
    "wrapt",
    "jmespath",
    "typing-extensions",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
)
WHEEL_STAGES = ("extract",)  # stages whose code also holds EXTRACT_DISTRIBUTIONS
# Stages that import pyarrow (the lease and the report, which gives the lease back, name their one key through
# lambdas/common/keys.py, not the lake's reader, and carry no Arrow).
ARROW_STAGES = ("extract", "transform", "load")

# Powertools Metrics namespace of the pipeline's own metrics (the load's, the report's and the extract's; docs/cost.md).
METRICS_NAMESPACE: str = MetricsSettings.default("metrics_namespace")
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


def _asset(
    *, wheels: Sequence[Path], source_dir: Path, package_dir: Path | None = None, prefix: str = "",
    extra_files: dict[str, Path] | None = None,
) -> lambda_.AssetCode:  # fmt: skip
    """An asset built in-process from platform wheels (and the ``lambdas`` package, for function code)."""
    return lambda_.Code.from_asset(
        str(source_dir),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            image=RUNTIME.bundling_image,
            # Part of the CDK's key for reusing a bundle made from the same directory: assets with other contents
            # must not share one. (Docker bundling, which this replaces, would see it as an environment variable.)
            environment={
                "BUNDLED_WHEELS": " ".join(wheel.name for wheel in wheels),
                "BUNDLED_PACKAGE": str(package_dir or ""),
                "BUNDLED_PREFIX": prefix,
            },
            local=LocalPythonBundler(wheels=wheels, package_dir=package_dir, prefix=prefix, extra_files=extra_files),
        ),
    )


def _pinned(wheel: Path) -> str:
    name, version, _, _ = parse_wheel_filename(wheel.name)
    return f"{name}=={version}"


def location_settings(location: DatabaseLocation | None) -> dict[str, str | int]:
    """The settings that complete a login-only secret (lambdas/common/db.py with_location); none unset."""
    if location is None:
        return {}
    values = {"database_host": location.host, "database_port": location.port, "database_name": location.dbname}
    return {name: value for name, value in values.items() if value is not None}


def function_settings(model: type[Settings], stage: str, **values: object) -> Settings:
    """A function's settings model with the values this deployment gives; its environment() is what the function
    is deployed with, so each variable is named once, in lambdas/common/settings.py. Values left out keep the
    model's default (which the function applies too), and a value out of the model's bounds fails the synth."""
    return model.model_validate({"service_name": service_name(stage), "log_level": "INFO", **values})


class PipelineFunctions(Construct):
    """Extract, transform, load, report and lease functions, their code and their two layers, every file from the
    pinned wheels of constraints-lambda.txt: one code asset shared by all but extract, whose own also holds the
    native wheels of its bulk read (WHEEL_STAGES); the Arrow layer for the stages that import pyarrow, the
    Powertools layer for all.

    Each function gets its own role (CloudWatch Logs access to its own log group only; data access is
    granted by the stack) and its own log group with the given retention. No function reserves concurrency
    unless ``extract_reserved_concurrency`` is given (a new account's quota of 10 leaves nothing to reserve): the
    extract Map's MaxConcurrency and the run lease bound the source connections. With ``database_network``,
    extract and load (the two functions that reach a database) run in those subnets with those security groups.

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
        extract_reserved_concurrency: int | None,
        extract_lookback_seconds: int,
        extract_signal_max_age_seconds: int,
        extract_partition_rows: int,
        held_stuck_after_seconds: int,
        lease_ttl_seconds: int,
        tracing: bool,
        database_network: FunctionNetwork | None = None,
        database_ca_bundle: Path | None = None,
        totesys_location: DatabaseLocation | None = None,
        warehouse_location: DatabaseLocation | None = None,
        stage_settings: dict[str, StageSettings] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = {**DEFAULT_STAGE_SETTINGS, **(stage_settings or {})}
        self._log_retention = log_retention
        self._tracing = tracing

        platform = LambdaPlatform.of(RUNTIME_NAME, ARCHITECTURE_NAME)
        locked = pins()

        def wheels(names: Sequence[str]) -> list[Path]:
            return lambda_wheels(platform, names, locked)

        extra_files = {CA_BUNDLE_FILE: database_ca_bundle} if database_ca_bundle else None
        self.code = _asset(wheels=wheels(CODE_DISTRIBUTIONS), source_dir=package_dir, package_dir=package_dir,
                           extra_files=extra_files)  # fmt: skip
        extract_wheels = wheels([*CODE_DISTRIBUTIONS, *EXTRACT_DISTRIBUTIONS])
        self.extract_code = _asset(wheels=extract_wheels, source_dir=package_dir, package_dir=package_dir,
                                   extra_files=extra_files)  # fmt: skip
        self.arrow_layer = self._layer("ArrowLayer", wheels(ARROW_LAYER_DISTRIBUTIONS), package_dir,
                                       "Apache Arrow (pyarrow) without Flight, headers and tests")  # fmt: skip
        self.powertools_layer = self._layer("PowertoolsLayer", wheels(POWERTOOLS_LAYER_DISTRIBUTIONS), package_dir,
                                            "Powertools for AWS Lambda with its X-Ray tracer")  # fmt: skip

        def layers(stage: str) -> list[lambda_.ILayerVersion]:
            return [self.powertools_layer, *([self.arrow_layer] if stage in ARROW_STAGES else [])]

        buckets = {"ingestion_bucket": ingestion_bucket_name, "processed_bucket": processed_bucket_name}
        # Both database clients verify the server (verify-full) against this bundle, else the runtime's CAs.
        tls = {"ca_bundle": CA_BUNDLE_PATH} if database_ca_bundle else {}

        self.extract = self._function(
            "Extract",
            stage="extract",
            settings=settings["extract"],
            layers=layers("extract"),
            description="Copies rows changed in totesys since the last watermark into the ingestion bucket.",
            environment=function_settings(
                ExtractSettings,
                "extract",
                **buckets,
                totesys_secret_id=totesys_secret_name,
                **location_settings(totesys_location),
                lookback_seconds=extract_lookback_seconds,
                signal_max_age_seconds=extract_signal_max_age_seconds,
                partition_rows=extract_partition_rows,
                metrics_namespace=METRICS_NAMESPACE,  # DriftRows: without it, publishing raises
                **tls,
            ),
            reserved_concurrency=extract_reserved_concurrency,
            network=database_network,
        )
        self.transform = self._function(
            "Transform",
            stage="transform",
            settings=settings["transform"],
            layers=layers("transform"),
            description="Remodels new ingestion batches into the warehouse star schema in the processed bucket.",
            environment=function_settings(TransformSettings, "transform", **buckets),
        )
        self.load = self._function(
            "Load",
            stage="load",
            settings=settings["load"],
            layers=layers("load"),
            description="Loads processed star-schema tables into the warehouse.",
            environment=function_settings(
                LoadSettings,
                "load",
                processed_bucket=processed_bucket_name,
                warehouse_secret_id=warehouse_secret_name,
                **location_settings(warehouse_location),
                metrics_namespace=METRICS_NAMESPACE,
                stuck_after_seconds=held_stuck_after_seconds,
                **tls,
            ),
            network=database_network,
        )
        # The report needs boto3 (in the runtime) and Powertools, not pyarrow: a lighter cold start.
        self.report = self._function(
            "Report",
            stage="report",
            settings=settings["report"],
            layers=layers("report"),
            description="Summarises each run's failed tables and e-mails them with the input that re-runs them.",
            environment=function_settings(
                ReportSettings,
                "report",
                alert_topic_arn=alert_topic_arn,
                metrics_namespace=METRICS_NAMESPACE,
                ingestion_bucket=ingestion_bucket_name,  # the run lease it releases
            ),
        )
        # The lease is a few conditional S3 requests and one DescribeExecution, with the lake's key names.
        self.lease = self._function(
            "Lease",
            stage="lease",
            settings=settings["lease"],
            layers=layers("lease"),
            description="Takes the run lease when a run starts and releases it when it ends: one run at a time.",
            environment=function_settings(
                LeaseSettings, "lease", ingestion_bucket=ingestion_bucket_name, lease_ttl_seconds=lease_ttl_seconds
            ),
        )

    def _layer(self, name: str, wheels: Sequence[Path], source_dir: Path, description: str) -> lambda_.LayerVersion:
        """A layer of wheels for RUNTIME and ARCHITECTURE, unpacked under python/."""
        return lambda_.LayerVersion(
            self,
            name,
            code=_asset(wheels=wheels, source_dir=source_dir, prefix=LAYER_PREFIX),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description=f"{description}: " + ", ".join(_pinned(wheel) for wheel in wheels),
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
        environment: Settings,
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
            environment=environment.environment(),
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

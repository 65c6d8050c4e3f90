"""The three pipeline Lambda functions, their code asset, managed layers, roles and log groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import AssetHashType, BundlingOptions, Duration, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.bundling import LocalPythonBundler
from cdk.nag import acknowledge

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.X86_64

# Publishers of the managed layers (same account in every commercial region).
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
PANDAS_LAYER_ACCOUNT = "336392948345"

# Pure-Python distributions bundled into the function code (with their installed dependency closure).
BUNDLED_REQUIREMENTS = ("pg8000", "iso4217")


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    memory_size: int
    timeout: Duration


DEFAULT_STAGE_SETTINGS = {
    "extract": StageSettings(memory_size=1024, timeout=Duration.minutes(5)),
    "transform": StageSettings(memory_size=2048, timeout=Duration.minutes(10)),
    "load": StageSettings(memory_size=1024, timeout=Duration.minutes(10)),
}


def python_tag(runtime: lambda_.Runtime) -> str:
    """'python3.14' -> 'python314', as used in the managed layer names."""
    return runtime.name.replace(".", "")


def powertools_layer_arn(
    *, region: str, runtime: lambda_.Runtime, architecture: lambda_.Architecture, version: int
) -> str:
    arch = "arm64" if architecture == lambda_.Architecture.ARM_64 else "x86_64"
    return (
        f"arn:aws:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{python_tag(runtime)}-{arch}:{version}"
    )


def pandas_layer_arn(*, region: str, runtime: lambda_.Runtime, architecture: lambda_.Architecture, version: int) -> str:
    suffix = "-Arm64" if architecture == lambda_.Architecture.ARM_64 else ""
    name = python_tag(runtime).replace("python", "Python")
    return f"arn:aws:lambda:{region}:{PANDAS_LAYER_ACCOUNT}:layer:AWSSDKPandas-{name}{suffix}:{version}"


class PipelineFunctions(Construct):
    """Extract, transform and load functions sharing one code asset and the two managed layers.

    Each function gets its own role (CloudWatch Logs access to its own log group only; data access is
    granted by the stack) and its own log group with the given retention.
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
        log_retention: logs.RetentionDays,
        powertools_layer_version: int,
        pandas_layer_version: int,
        bundled_requirements: Sequence[str] = BUNDLED_REQUIREMENTS,
        stage_settings: dict[str, StageSettings] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        if Token.is_unresolved(region):
            raise ValueError("the stack needs a concrete region to form the managed layer ARNs")
        settings = {**DEFAULT_STAGE_SETTINGS, **(stage_settings or {})}

        self.code = lambda_.Code.from_asset(
            str(package_dir),
            asset_hash_type=AssetHashType.OUTPUT,
            bundling=BundlingOptions(
                image=RUNTIME.bundling_image,
                local=LocalPythonBundler(
                    package_dir=package_dir,
                    requirements=bundled_requirements,
                    python_version=RUNTIME.name.removeprefix("python"),
                ),
            ),
        )
        # With @aws-cdk/aws-lambda:recognizeLayerVersion the layers are rendered sorted by construct path:
        # AwsSdkPandasLayer first, then PowertoolsLayer, whose files win where the two overlap.
        self.layers = [
            lambda_.LayerVersion.from_layer_version_arn(
                self,
                "PowertoolsLayer",
                powertools_layer_arn(
                    region=region, runtime=RUNTIME, architecture=ARCHITECTURE, version=powertools_layer_version
                ),
            ),
            lambda_.LayerVersion.from_layer_version_arn(
                self,
                "AwsSdkPandasLayer",
                pandas_layer_arn(
                    region=region, runtime=RUNTIME, architecture=ARCHITECTURE, version=pandas_layer_version
                ),
            ),
        ]
        buckets = {"INGESTION_BUCKET": ingestion_bucket_name, "PROCESSED_BUCKET": processed_bucket_name}

        self.extract = self._function(
            "Extract",
            stage="extract",
            settings=settings["extract"],
            log_retention=log_retention,
            description="Copies rows changed in totesys since the last watermark into the ingestion bucket.",
            environment={**buckets, "TOTESYS_SECRET_ID": totesys_secret_name},
        )
        self.transform = self._function(
            "Transform",
            stage="transform",
            settings=settings["transform"],
            log_retention=log_retention,
            description="Remodels new ingestion batches into the warehouse star schema in the processed bucket.",
            environment=buckets,
        )
        self.load = self._function(
            "Load",
            stage="load",
            settings=settings["load"],
            log_retention=log_retention,
            description="Loads processed star-schema tables into the warehouse.",
            environment={**buckets, "WAREHOUSE_SECRET_ID": warehouse_secret_name},
        )

    @property
    def all(self) -> tuple[lambda_.Function, lambda_.Function, lambda_.Function]:
        return (self.extract, self.transform, self.load)

    def _function(
        self,
        name: str,
        *,
        stage: str,
        settings: StageSettings,
        log_retention: logs.RetentionDays,
        description: str,
        environment: dict[str, str],
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{name}Logs", retention=log_retention)
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs the totesys {stage} function",
        )
        # Instead of the AWSLambdaBasicExecutionRole managed policy: write to this function's log group only.
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            name,
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=f"lambdas.{stage}.handler.handler",
            code=self.code,
            layers=self.layers,
            memory_size=settings.memory_size,
            timeout=settings.timeout,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": f"totesys-{stage}",
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            reason="Active X-Ray tracing needs xray:PutTraceSegments and xray:PutTelemetryRecords, "
            "which support no resource-level permissions.",
        )
        return function

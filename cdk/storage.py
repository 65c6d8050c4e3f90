"""The data lake buckets: ingestion (raw extracts), processed (star-schema tables) and their access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct


class Storage(Construct):
    """Three private, TLS-only, S3-encrypted buckets that outlive the stack (RemovalPolicy.RETAIN).

    ``ingestion_bucket`` is versioned, since extracts are the only copy of the source history; both data
    buckets send server access logs to ``access_logs_bucket`` (which, as their log destination, does not log
    itself).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_log_expiry: Duration | None = None,
        noncurrent_version_expiry: Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        access_log_expiry = access_log_expiry or Duration.days(365)
        noncurrent_version_expiry = noncurrent_version_expiry or Duration.days(90)

        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            **_private_bucket_settings(),
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=access_log_expiry)],
        )

        self.ingestion_bucket = s3.Bucket(
            self,
            "IngestionBucket",
            **_private_bucket_settings(),
            versioned=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="ingestion/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=noncurrent_version_expiry,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )

        self.processed_bucket = s3.Bucket(
            self,
            "ProcessedBucket",
            **_private_bucket_settings(),
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="processed/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
                )
            ],
        )


def _private_bucket_settings() -> dict:
    return {
        "encryption": s3.BucketEncryption.S3_MANAGED,
        "enforce_ssl": True,
        "minimum_tls_version": 1.2,
        "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
        "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        "removal_policy": RemovalPolicy.RETAIN,
    }

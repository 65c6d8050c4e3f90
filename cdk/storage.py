"""The data lake buckets: ingestion (raw extracts), processed (star-schema tables) and their access logs."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import LakeRetention
from lambdas.common import keys

# Writers that crash mid-upload leave parts behind; nothing ever completes them later.
INCOMPLETE_UPLOAD_DAYS = 7


class Storage(Construct):
    """Three private, TLS-only, S3-encrypted buckets that outlive the stack (RemovalPolicy.RETAIN).

    Both data buckets are versioned: extracts are the only copy of the source history, and the state heads
    (``_state/``) and the transform's snapshots (``_current/``) are what every next run trusts, so an accidental
    overwrite or delete of either must be recoverable. Both data buckets send server access logs to
    ``access_logs_bucket`` (which, as their log destination, does not log itself).

    Lifecycle rules apply to current objects only under the table prefixes (``<table>/``) of each bucket, one
    rule per table: the ``_state/`` heads (and the transform's ``_current/`` snapshots, which may stay the
    current copy for years) are never transitioned or expired; only their overwritten versions expire, after
    ``noncurrent_version_expiration_days``. Data objects move to STANDARD_IA, which still serves
    GETs at once, because readers fetch committed batches by key; they only expire if
    ``data_expiration_days`` is set.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        ingestion_tables: Sequence[str],
        processed_tables: Sequence[str],
        retention: LakeRetention,
    ) -> None:
        super().__init__(scope, construct_id)
        self.retention = retention

        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            **_private_bucket_settings(),
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs", expiration=Duration.days(retention.access_log_retention_days)
                ),
                _abort_incomplete_uploads(),
            ],
        )

        self.ingestion_bucket = s3.Bucket(
            self,
            "IngestionBucket",
            **_private_bucket_settings(),
            versioned=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="ingestion/",
            lifecycle_rules=[
                *(self._table_rule(table, versioned=True) for table in ingestion_tables),
                self._old_versions_rule(keys.STATE_PREFIX),
                _abort_incomplete_uploads(),
            ],
        )

        self.processed_bucket = s3.Bucket(
            self,
            "ProcessedBucket",
            **_private_bucket_settings(),
            versioned=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="processed/",
            lifecycle_rules=[
                *(self._table_rule(table, versioned=True) for table in processed_tables),
                self._old_versions_rule(keys.STATE_PREFIX),
                self._old_versions_rule(keys.CURRENT_PREFIX),
                _abort_incomplete_uploads(),
            ],
        )

    def _old_versions_rule(self, prefix: str) -> s3.LifecycleRule:
        """Overwritten state is kept long enough to recover from a mistake, then goes; the current copy never does."""
        return s3.LifecycleRule(
            id=f"{prefix}-old-versions",
            prefix=f"{prefix}/",
            noncurrent_version_expiration=Duration.days(self.retention.noncurrent_version_expiration_days),
        )

    def _table_rule(self, table: str, *, versioned: bool) -> s3.LifecycleRule:
        retention = self.retention
        return s3.LifecycleRule(
            id=f"{table}-batches",
            prefix=keys.table_prefix(table),
            transitions=[
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(retention.data_transition_days),
                )
            ],
            expiration=(
                Duration.days(retention.data_expiration_days) if retention.data_expiration_days is not None else None
            ),
            noncurrent_version_expiration=(
                Duration.days(retention.noncurrent_version_expiration_days) if versioned else None
            ),
        )


def _abort_incomplete_uploads() -> s3.LifecycleRule:
    # Only incomplete multipart uploads: no object, current or noncurrent, is affected.
    return s3.LifecycleRule(
        id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS)
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

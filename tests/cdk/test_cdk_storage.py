"""The lake buckets: private, encrypted, TLS-only, logged, and lifecycle rules that never touch state."""

from __future__ import annotations

from aws_cdk.assertions import Match

from lambdas.common.tables import SOURCE_TABLES, WAREHOUSE_TABLES
from tests.cdk.support import Synthesized


def lifecycle_rules(synthesized: Synthesized, bucket: str) -> list[dict]:
    logical = synthesized.bucket_ids()[bucket]
    return synthesized.properties(logical)["LifecycleConfiguration"]["Rules"]


def test_buckets_are_private_encrypted_tls_only_and_retained(synthesized: Synthesized) -> None:
    synthesized.template.resource_count_is("AWS::S3::Bucket", 3)
    for logical in synthesized.bucket_ids().values():
        bucket = synthesized.resources_json[logical]
        properties = bucket["Properties"]
        assert bucket["DeletionPolicy"] == "Retain"
        assert bucket["UpdateReplacePolicy"] == "Retain"
        assert "BucketName" not in properties, "names are generated, never hard-coded"
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        synthesized.template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": logical},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                    "Principal": {"AWS": "*"},
                                }
                            ),
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"NumericLessThan": {"s3:TlsVersion": 1.2}},
                                }
                            ),
                        ]
                    )
                },
            },
        )


def test_both_data_buckets_are_versioned_and_log_access(synthesized: Synthesized) -> None:
    buckets = synthesized.bucket_ids()

    for name in ("ingestion", "processed"):  # processed holds state too: _state/ heads and _current/ snapshots
        assert synthesized.properties(buckets[name])["VersioningConfiguration"] == {"Status": "Enabled"}
    for name, prefix in (("ingestion", "ingestion/"), ("processed", "processed/")):
        assert synthesized.properties(buckets[name])["LoggingConfiguration"] == {
            "DestinationBucketName": {"Ref": buckets["access_logs"]},
            "LogFilePrefix": prefix,
        }
    assert "LoggingConfiguration" not in synthesized.properties(buckets["access_logs"])


def test_data_objects_move_to_infrequent_access_per_table_and_never_expire_by_default(
    synthesized: Synthesized,
) -> None:
    for bucket, tables, state in (("ingestion", SOURCE_TABLES, ["_state"]),
                                  ("processed", WAREHOUSE_TABLES, ["_state", "_current"])):  # fmt: skip
        rules = {rule["Id"]: rule for rule in lifecycle_rules(synthesized, bucket)}
        assert set(rules) == {f"{table}-batches" for table in tables} | {f"{p}-old-versions" for p in state} | {
            "abort-incomplete-uploads"
        }
        for table in tables:
            expected = {
                "Id": f"{table}-batches",
                "Prefix": f"{table}/",
                "Status": "Enabled",
                "Transitions": [{"StorageClass": "STANDARD_IA", "TransitionInDays": 90}],
                "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
            }
            assert rules[f"{table}-batches"] == expected, (bucket, table)


def test_no_lifecycle_rule_touches_state_or_current_objects(synthesized: Synthesized, variant: Synthesized) -> None:
    for stack in (synthesized, variant):
        for bucket in ("ingestion", "processed"):
            for rule in lifecycle_rules(stack, bucket):
                prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix"))
                if prefix is None:
                    # A bucket-wide rule may only clean up uploads that never completed, never objects.
                    assert set(rule) == {"Id", "Status", "AbortIncompleteMultipartUpload"}, rule
                    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
                elif prefix.startswith(("_state", "_current")):
                    # Only overwritten versions of state expire, after the configured days; the current copy never.
                    assert prefix in ("_state/", "_current/"), rule
                    assert set(rule) == {"Id", "Prefix", "Status", "NoncurrentVersionExpiration"}, rule
                else:
                    table = prefix.removesuffix("/")
                    assert prefix.endswith("/") and table in (*SOURCE_TABLES, *WAREHOUSE_TABLES), rule


def test_variant_expires_data_far_behind_and_keeps_noncurrent_versions_for_the_given_days(
    variant: Synthesized,
) -> None:
    for bucket in ("ingestion", "processed"):
        for rule in lifecycle_rules(variant, bucket):
            if "Prefix" not in rule:
                continue
            assert rule.get("NoncurrentVersionExpiration") == {"NoncurrentDays": 30}
            if rule["Prefix"].startswith("_"):
                continue  # state: only its old versions expire
            assert rule["ExpirationInDays"] == 730
            assert rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 60}]


def test_access_logs_expire_after_the_configured_days(synthesized: Synthesized, variant: Synthesized) -> None:
    for stack, days in ((synthesized, 365), (variant, 180)):
        rules = lifecycle_rules(stack, "access_logs")
        assert {"ExpirationInDays": days, "Id": "expire-access-logs", "Status": "Enabled"} in rules

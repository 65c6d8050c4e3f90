"""Run one real handler as Lambda would trace it, and print the X-Ray subsegments it produced (JSON lines).

Started in a fresh interpreter by tests/test_tracing.py: tracing is configured when the handler modules are
imported, and the test process has them imported with tracing off (outside Lambda). The environment makes this
process look like a Lambda container with an active trace; the X-Ray SDK's own recorder builds the subsegments,
and an emitter that keeps them replaces the UDP one that would send them to the X-Ray daemon.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


class KeepingEmitter:
    """What the X-Ray SDK would send to the daemon, kept as the JSON documents it would send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(json.loads(entity.serialize()))

    def set_daemon_address(self, address: str | None) -> None:  # the SDK's emitter interface
        pass


def flattened(entities: list[dict[str, Any]], parent: str | None = None) -> list[dict[str, Any]]:
    """Every subsegment with the name of the one it is inside."""
    found = []
    for entity in entities:
        found.append({**entity, "parent": parent})
        found.extend(flattened(entity.get("subsegments", []), entity.get("name")))
    return found


def main() -> None:
    from aws_xray_sdk.core import xray_recorder
    from moto import mock_aws

    emitter = KeepingEmitter()
    xray_recorder.configure(emitter=emitter, streaming_threshold=0, context_missing="LOG_ERROR")
    with mock_aws():
        import boto3

        from lambdas.extract import handler as extract

        where = {"LocationConstraint": os.environ["AWS_REGION"]}
        boto3.client("s3").create_bucket(Bucket=os.environ["INGESTION_BUCKET"], CreateBucketConfiguration=where)
        boto3.client("secretsmanager").create_secret(Name=os.environ["TOTESYS_SECRET_ID"],
                                                     SecretString=os.environ["PROBE_SOURCE_SECRET"])  # fmt: skip

        class Context:
            function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
            memory_limit_in_mb = 1024
            invoked_function_arn = f"arn:aws:lambda:{os.environ['AWS_REGION']}:123456789012:function:{function_name}"
            aws_request_id = "probe"

            def get_remaining_time_in_millis(self) -> int:
                return 900_000

        result = extract.handler({"table": sys.argv[1], "execution_id": "arn:probe"}, Context())
    entities = flattened(emitter.sent)
    names = {entity.get("id"): entity.get("name") for entity in entities}
    for entity in entities:  # a streamed subsegment names its parent by id
        parent = entity["parent"] or names.get(entity.get("parent_id"))
        print(json.dumps({"name": entity.get("name"), "parent": parent,
                          "annotations": entity.get("annotations", {}),
                          "operation": entity.get("aws", {}).get("operation")}))  # fmt: skip
    print(json.dumps({"result": result}, default=str))


if __name__ == "__main__":
    main()

"""X-Ray tracing as Lambda runs it: annotations to find a table's invocations, subsegments for its I/O."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Databases

ROOT = Path(__file__).resolve().parents[1]


def traced_extract(databases: Databases, table: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the extract handler in a process that looks like a traced Lambda container; its subsegments and result."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_", "_X_AMZN"))}
    env = {
        **clean,
        "LAMBDA_TASK_ROOT": str(ROOT),
        "AWS_LAMBDA_FUNCTION_NAME": "totesys-extract",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_REGION": "eu-west-2",
        "AWS_DEFAULT_REGION": "eu-west-2",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "totesys-extract",
        "POWERTOOLS_METRICS_NAMESPACE": "TotesysEtl",
        "INGESTION_BUCKET": "probe-ingestion",
        "PROCESSED_BUCKET": "probe-processed",  # required by the extract's settings (its plan reads the heads)
        "TOTESYS_SECRET_ID": "totesys/source",
        "PROBE_SOURCE_SECRET": json.dumps(databases.source),
    }
    done = subprocess.run([sys.executable, "-m", "tests.tracing_probe", table], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [line for line in lines if "name" in line], lines[-1]["result"]


def test_an_extract_is_traced_with_its_table_and_stage_and_subsegments_for_postgres_and_s3(
    databases: Databases,
) -> None:
    databases.seed(scale=0.02)

    subsegments, result = traced_extract(databases, "staff")

    assert result["rows"] == databases.source_sql("SELECT count(*) FROM staff")[0][0]
    handler = next(s for s in subsegments if s["name"] == "## handler")
    assert handler["annotations"]["table"] == "staff" and handler["annotations"]["stage"] == "extract"
    copy = "## postgres to s3: copy changed rows into the ingestion bucket"
    inside = {(s["parent"], s["name"], s["operation"]) for s in subsegments}
    assert ("## handler", "## postgres: connect to totesys", None) in inside
    assert ("## postgres: connect to totesys", "secretsmanager", "GetSecretValue") in inside
    assert ("## handler", copy, None) in inside
    assert (copy, "s3", "PutObject") in inside  # the batch's parts, manifest and head

"""X-Ray tracing of every handler through Powertools Tracer, configured in one place.

Each invocation's trace carries the table and the stage as annotations (searchable in the X-Ray console:
`annotation.table = "sales_order"`), and subsegments around the PostgreSQL and S3 work, so a slow run shows which
side of a table's work took the time; the S3 and Secrets Manager calls inside them are traced one by one by
Powertools' patching of botocore. Outside Lambda (the local runner, the tests) Powertools disables tracing by
itself (no LAMBDA_TASK_ROOT), as POWERTOOLS_TRACE_DISABLED=true does anywhere. In AWS, aws-xray-sdk comes with
the Powertools layer; requirements.txt pins it for local runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Tracer

tracer = Tracer()


def annotate(*, table: str, stage: str) -> None:
    tracer.put_annotation(key="table", value=table)
    tracer.put_annotation(key="stage", value=stage)


@contextmanager
def traced(work: str) -> Iterator[None]:
    """A subsegment named for the work inside it (e.g. "postgres: connect to totesys")."""
    with tracer.provider.in_subsegment(f"## {work}"):
        yield

"""What one function sees while it runs in-process: its own environment, and only the AWS calls its policy allows.

In AWS each function is its own container with its own environment variables and its own role. Locally every
handler runs in the runner's process, on the thread moto's Step Functions interpreter invoked it from; so, for
the duration of an invocation (:func:`invocation`), that thread sees

- an ``os.environ`` holding that function's synthesized variables (and the few a Lambda runtime adds), not the
  process's nor another function's: :class:`FunctionEnviron` answers per thread;
- every botocore call it makes checked against that function's synthesized policy statements before moto serves
  it: :func:`guarded` raises ``AccessDenied`` naming the function, the action and the resource, as the policy
  evaluator of statemachine/local/iam.py judges it.

The invocation also counts its AWS requests by IAM action (docs/cost.md), and keeps each denial, so that a run
shows a missing grant even when the handler caught the error.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from statemachine.local.deployment import REGION, FunctionSpec
from statemachine.local.iam import (
    OPERATIONS,
    UnsupportedStatement,
    access_denied,
    allows,
    authorised_as,
    check_statements,
    denial,
)

__all__ = [
    "LOCAL_ENVIRONMENT",
    "OPERATIONS",
    "PASSED_THROUGH",
    "PASSED_THROUGH_PREFIXES",
    "RUNTIME_ENVIRONMENT",
    "FunctionEnviron",
    "UnsupportedStatement",
    "access_denied",
    "allows",
    "check_statements",
    "current",
    "denial",
    "guarded",
    "invocation",
    "invocation_environment",
]

# Variables a Lambda runtime sets itself (not in the template); credentials are moto's.
RUNTIME_ENVIRONMENT = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.14",
}
# Locally only: metrics would be EMF lines on the terminal (CloudWatch reads them in AWS).
LOCAL_ENVIRONMENT = {"POWERTOOLS_METRICS_DISABLED": "true"}
# What a developer may set for a local run and the functions then see: the log level, moto's own settings.
PASSED_THROUGH = ("PATH", "HOME", "TMPDIR", "TZ", "LANG", "POWERTOOLS_LOG_LEVEL")
PASSED_THROUGH_PREFIXES = ("LC_", "MOTO_")


def invocation_environment(spec: FunctionSpec, process: Mapping[str, str]) -> dict[str, str]:
    """What ``os.environ`` holds inside an invocation of ``spec``: its variables, the runtime's, little else."""
    passed = {k: v for k, v in process.items() if k in PASSED_THROUGH or k.startswith(PASSED_THROUGH_PREFIXES)}
    log_level = {"POWERTOOLS_LOG_LEVEL": passed.pop("POWERTOOLS_LOG_LEVEL")} if "POWERTOOLS_LOG_LEVEL" in passed else {}
    return {**passed, **spec.environment, **RUNTIME_ENVIRONMENT, **LOCAL_ENVIRONMENT, **log_level}


@dataclass
class _Invocation:
    spec: FunctionSpec
    environment: dict[str, str]
    denied: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)  # the AWS requests it made, by IAM action (docs/cost.md)


_local = threading.local()


def current() -> _Invocation | None:
    """The invocation running on this thread; None for the runner itself."""
    return getattr(_local, "invocation", None)


@contextmanager
def invocation(spec: FunctionSpec, process: Mapping[str, str]) -> Iterator[_Invocation]:
    """Run the body as one invocation of ``spec`` on this thread (environment and permissions)."""
    previous = current()
    _local.invocation = running = _Invocation(spec, invocation_environment(spec, process))
    try:
        yield running
    finally:
        _local.invocation = previous


class FunctionEnviron(MutableMapping[str, str]):
    """``os.environ`` for the runner's process: inside an invocation, that function's variables only."""

    def __init__(self, process: MutableMapping[str, str]) -> None:
        self.process = process

    def _mapping(self) -> MutableMapping[str, str]:
        running = current()
        return running.environment if running is not None else self.process

    def __getitem__(self, key: str) -> str:
        return self._mapping()[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._mapping()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._mapping()))

    def __len__(self) -> int:
        return len(self._mapping())

    def copy(self) -> dict[str, str]:
        return dict(self._mapping())


def _deny(running: _Invocation, action: str, resource: str, operation: str) -> ClientError:
    message = denial(running.spec.name, action, resource)
    running.denied.append(message)
    return access_denied(message, operation)


def guarded(make_api_call: Callable[..., Any]) -> Callable[..., Any]:
    """botocore's client call, authorising each call made inside an invocation first."""

    def _make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        running = current()
        if running is None:  # the runner itself (deploying, mirroring the lake, starting executions)
            return make_api_call(client, operation, params)
        service = client.meta.service_model.signing_name
        action, resource = authorised_as(service, operation, params)
        if resource is None or not allows(running.spec.statements, action, resource):
            raise _deny(running, action, resource or "*", operation)
        running.calls[action] += 1
        try:
            return make_api_call(client, operation, params)
        except ClientError as error:
            # S3 says 404 for a missing key only to a caller that may list the bucket; to others, 403.
            code = error.response.get("Error", {}).get("Code")
            listing = f"arn:aws:s3:::{params.get('Bucket')}"
            if service == "s3" and code in ("NoSuchKey", "404") and not allows(running.spec.statements,
                                                                               "s3:ListBucket", listing):  # fmt: skip
                raise _deny(running, "s3:ListBucket", listing, operation) from error
            raise

    return _make_api_call

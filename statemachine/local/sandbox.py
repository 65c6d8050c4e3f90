"""What one function sees while it runs in-process: its own environment, and only the AWS calls its policy allows.

In AWS each function is its own container with its own environment variables and its own role. Locally every
handler runs in the runner's process, on the thread moto's Step Functions interpreter invoked it from; so, for
the duration of an invocation, that thread sees

- an ``os.environ`` holding that function's synthesized variables (and the few a Lambda runtime adds), not the
  process's nor another function's: :class:`FunctionEnviron` answers per thread;
- every botocore call it makes checked against that function's synthesized policy statements before moto serves
  it: :func:`check` raises ``AccessDenied`` naming the function, the action and the resource.

The evaluator is deliberately small, and refuses what it cannot judge rather than allowing it: Allow statements
with ``Action`` and ``Resource`` (``*`` and ``?`` wildcards, actions case-insensitive, resources case-sensitive).
A statement with ``Deny``, ``NotAction``, ``NotResource`` or a ``Condition`` is rejected when the deployment is
read (the stack has none in its function and state machine roles today). Each AWS operation the handlers use is
mapped to the IAM action and resource ARN that AWS authorises it as (:data:`OPERATIONS`); an operation not in
that table is denied, so a new kind of call fails locally until it is described here.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from botocore.exceptions import ClientError

from statemachine.local.deployment import ACCOUNT, REGION, FunctionSpec

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


class UnsupportedStatement(ValueError):
    """A policy statement this evaluator cannot judge; it is refused rather than read as allowing anything."""


def check_statements(statements: tuple[dict[str, Any], ...]) -> None:
    for statement in statements:
        if statement.get("Effect") != "Allow" or not {"Action", "Resource"} <= statement.keys():
            raise UnsupportedStatement(f"only Allow statements with Action and Resource are evaluated: {statement}")
        if {"NotAction", "NotResource", "Condition", "Principal"} & statement.keys():
            raise UnsupportedStatement(
                f"NotAction, NotResource, Condition and Principal are not evaluated: {statement}"
            )


@lru_cache(maxsize=4096)
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def allows(statements: tuple[dict[str, Any], ...], action: str, resource: str) -> bool:
    """Whether an Allow statement names the action and the resource (IAM wildcards; there is no Deny to weigh)."""
    return any(
        any(_pattern(a, True).fullmatch(action) for a in _as_list(s["Action"]))
        and any(_pattern(r, False).fullmatch(resource) for r in _as_list(s["Resource"]))
        for s in statements
    )


def _s3_object(params: Mapping[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def _s3_bucket(params: Mapping[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}"


def _secret_arn(params: Mapping[str, Any]) -> str:
    """The ARN Secrets Manager authorises a GetSecretValue on: the secret's, with its random suffix."""
    secret_id = str(params["SecretId"])
    if secret_id.startswith("arn:"):
        return secret_id
    from moto.secretsmanager.models import secretsmanager_backends

    secrets = secretsmanager_backends[ACCOUNT][REGION].secrets
    return (
        secrets[secret_id].arn
        if secret_id in secrets
        else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}"
    )


# (service, operation) -> (IAM action, the resource ARN the request is authorised on)
OPERATIONS: dict[tuple[str, str], tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    ("s3", "GetObject"): ("s3:GetObject", _s3_object),
    ("s3", "HeadObject"): ("s3:GetObject", _s3_object),
    ("s3", "PutObject"): ("s3:PutObject", _s3_object),
    ("s3", "DeleteObject"): ("s3:DeleteObject", _s3_object),
    ("s3", "ListObjectsV2"): ("s3:ListBucket", _s3_bucket),
    ("s3", "HeadBucket"): ("s3:ListBucket", _s3_bucket),
    ("secretsmanager", "GetSecretValue"): ("secretsmanager:GetSecretValue", _secret_arn),
    ("sns", "Publish"): ("sns:Publish", lambda p: str(p["TopicArn"])),
    ("states", "DescribeExecution"): ("states:DescribeExecution", lambda p: str(p["executionArn"])),
}


def denial(principal: str, action: str, resource: str) -> str:
    return f"{principal} is not authorized to perform: {action} on resource: {resource} (its synthesized policy)"


def access_denied(message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, operation)


def _deny(running: _Invocation, action: str, resource: str, operation: str) -> ClientError:
    message = denial(running.spec.name, action, resource)
    running.denied.append(message)
    return access_denied(message, operation)


def guarded(make_api_call: Callable[..., Any]) -> Callable[..., Any]:
    """botocore's ``BaseClient._make_api_call``, authorising each call made inside an invocation first."""

    def _make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        running = current()
        if running is None:  # the runner itself (deploying, mirroring the lake, starting executions)
            return make_api_call(client, operation, params)
        service = client.meta.service_model.signing_name
        action, arn_of = OPERATIONS.get((service, operation), (f"{service}:{operation}", None))
        resource = arn_of(params) if arn_of is not None else "*"
        if arn_of is None or not allows(running.spec.statements, action, resource):
            raise _deny(running, action, resource, operation)
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

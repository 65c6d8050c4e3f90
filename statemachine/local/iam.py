"""A small IAM policy evaluator: does a synthesized policy allow this action on this resource?

The local runner authorises each AWS call a function makes against that function's policy statements from the
synthesized stack (statemachine/local/sandbox.py applies it). The evaluator is deliberately small, and refuses what
it cannot judge rather than allowing it: Allow statements with ``Action`` and ``Resource`` (``*`` and ``?``
wildcards, actions case-insensitive, resources case-sensitive). A statement with ``Deny``, ``NotAction``,
``NotResource`` or a ``Condition`` is rejected when the deployment is read (the stack has none in its function and
state machine roles today). Each AWS operation the handlers use is mapped to the IAM action and resource ARN that
AWS authorises it as (:data:`OPERATIONS`); an operation not in that table is denied, so a new kind of call fails
locally until it is described here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from botocore.exceptions import ClientError

from statemachine.local.deployment import ACCOUNT, REGION
from statemachine.local.internals import secret_arn

__all__ = [
    "OPERATIONS",
    "UnsupportedStatement",
    "access_denied",
    "allows",
    "authorised_as",
    "check_statements",
    "denial",
]

Statements = tuple[dict[str, Any], ...]


class UnsupportedStatement(ValueError):
    """A policy statement this evaluator cannot judge; it is refused rather than read as allowing anything."""


def check_statements(statements: Statements) -> None:
    """Refuse, before anything runs, a policy with a statement `allows` could not judge correctly."""
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


def allows(statements: Statements, action: str, resource: str) -> bool:
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
    return secret_arn(secret_id) or f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}"


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


def authorised_as(service: str, operation: str, params: Mapping[str, Any]) -> tuple[str, str | None]:
    """(IAM action, resource ARN) a request is authorised as; the resource is None for an operation not described
    in OPERATIONS, which is then denied."""
    action, arn_of = OPERATIONS.get((service, operation), (f"{service}:{operation}", None))
    return action, arn_of(params) if arn_of is not None else None


def denial(principal: str, action: str, resource: str) -> str:
    """AWS's AccessDenied message, naming whose synthesized policy lacks the grant."""
    return f"{principal} is not authorized to perform: {action} on resource: {resource} (its synthesized policy)"


def access_denied(message: str, operation: str) -> ClientError:
    """The error botocore raises for a refused call, as AWS would answer it."""
    return ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, operation)

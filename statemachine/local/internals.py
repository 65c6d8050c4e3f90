"""Where the local runner reaches inside moto and botocore: every use of a private API of theirs, in one place.

moto emulates AWS, but three things the local runner needs have no public interface, and botocore one more:

- **Invoking a Lambda.** moto runs a function's code in Docker, which this project's machines do not have; the
  runner replaces `LambdaFunction._invoke_lambda(function, event) -> (payload, errored, logs)` with a call to the
  real handler in-process (TOOLCHAIN.md: the `use_docker: False` backend only echoes the event back).
- **Authorising a call.** Each AWS call a handler makes is checked against its function's policy before moto
  serves it; botocore's `BaseClient._make_api_call` is the one door every client's operation goes through, where
  its event hooks are per client and copied at the client's creation (a handler's cached client would miss them).
- **What the alert topic sent,** and **a secret's ARN** from its name: read from moto's backends, as moto's own
  documentation shows for asserting on its state (a `DescribeSecret` instead would itself be authorised).

Each is a context manager or a small function; when moto or botocore change, this module is what to read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from botocore.client import BaseClient

from statemachine.local.deployment import ACCOUNT, REGION

__all__ = ["authorising_api_calls", "invoking_lambdas_with", "quiet_moto", "secret_arn", "sent_notifications"]

# (function, event) -> (the payload as JSON, whether it is the function's error, the log tail)
LambdaInvoke = Callable[[Any, Any], tuple[str, bool, str]]


@contextmanager
def invoking_lambdas_with(invoke: LambdaInvoke) -> Iterator[None]:
    """While active, moto's Lambda invokes `invoke(function, event)` instead of a Docker container.

    To report a function error, `invoke` returns `(json.dumps({"errorType": ..., "errorMessage": ...}), True, "")`:
    the state machine's Retry and Catch then see that error name, as in AWS.
    """
    from moto.awslambda.models import LambdaFunction

    def _invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
        return invoke(function, event)

    with mock.patch.object(LambdaFunction, "_invoke_lambda", _invoke_lambda):
        yield


# What every botocore client call goes through: (client, operation name, API parameters) -> the parsed response.
ApiCall = Callable[[Any, str, dict[str, Any]], Any]


@contextmanager
def authorising_api_calls(guard: Callable[[ApiCall], ApiCall]) -> Iterator[None]:
    """While active, every botocore client call goes through `guard(the original call)`, on any thread."""
    with mock.patch.object(BaseClient, "_make_api_call", guard(BaseClient._make_api_call)):
        yield


@contextmanager
def quiet_moto() -> Iterator[None]:
    """moto's ASL interpreter logs its whole parse tree at ERROR for every failed state: silence it (and the HTTP
    libraries' chatter) while active."""
    noisy = [logging.getLogger(n) for n in ("moto.stepfunctions.parser", "moto", "botocore", "urllib3")]
    with ExitStack() as stack:
        for logger in noisy:
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.CRITICAL)
        yield


def sent_notifications(topic_arn: str) -> list[tuple[str, str]]:
    """(subject, message) of every notification moto's SNS published to the topic, oldest first."""
    from moto.sns.models import sns_backends

    topic = sns_backends[ACCOUNT][REGION].topics[topic_arn]
    return [(subject or "", message) for _, message, subject, _, _ in topic.sent_notifications]


def secret_arn(name: str) -> str | None:
    """The ARN, with its random suffix, of the secret moto holds under `name`; None when it holds none."""
    from moto.secretsmanager.models import secretsmanager_backends

    secrets = secretsmanager_backends[ACCOUNT][REGION].secrets
    return secrets[name].arn if name in secrets else None

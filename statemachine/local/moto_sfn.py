"""moto's Step Functions integration (``arn:aws:states:::states:startExecution.sync:2``), made to run as AWS runs it.

moto 5.2 executes a ``.sync``/``.sync:2`` child for real (it starts the execution and polls DescribeExecution until
it ends), but its port of the interpreter leaves out the step that turns the ASL's parameter names into the SDK's:
``StateMachineArn``/``Input``/``Name`` reach boto3 as they are written (boto3 wants ``stateMachineArn``...) and the
responses come back as ``executionArn``/``output`` where the resolver reads ``ExecutionArn``/``Output``. So without
this module every child start fails with ``States.Runtime: 'StateMachineArn'``. :func:`sync_children` supplies the
two renamings for the Step Functions integration only, and authorises each start against the parent's policy, as
IAM does in AWS (a missing ``states:StartExecution`` grant fails the task with the error AWS gives).

What moto still does not model of an Express child: its five-minute limit (it runs as long as its work does), and
its history: AWS keeps no history of an Express execution (its graph lives in the child's log group), while moto
answers GetExecutionHistory for it, which is how the local runner shows and counts the child's states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

SYNC_POLL_SECONDS = 0.02


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _upper_first(name: str) -> str:
    return name[:1].upper() + name[1:]


def _as_asl(response: dict[str, Any]) -> None:
    """A boto3 response as the ASL sees it: PascalCase names, dates as ISO text."""
    for key in list(response):
        value = response.pop(key)
        if key == "ResponseMetadata":
            continue
        response[_upper_first(key)] = value.isoformat() if hasattr(value, "isoformat") else value


@contextmanager
def sync_children(may_start: Callable[[str], str | None]) -> Iterator[None]:
    """Patch moto's Step Functions integration for the duration; ``may_start(state_machine_arn)`` returns why the
    caller may not start it (an AccessDenied message), or None."""
    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    normalise_parameters = StateTaskServiceSfn._normalise_parameters
    eval_service_task = StateTaskServiceSfn._eval_service_task

    def parameters(self: Any, parameters: dict[str, Any], boto_service_name: str | None = None,
                   service_action_name: str | None = None) -> None:  # fmt: skip
        normalise_parameters(self, parameters, boto_service_name, service_action_name)
        for key in list(parameters):
            parameters[_lower_first(key)] = parameters.pop(key)

    def response(self: Any, response: Any, boto_service_name: str | None = None,
                 service_action_name: str | None = None) -> None:  # fmt: skip
        if isinstance(response, dict):
            _as_asl(response)

    def service_task(self: Any, env: Any, resource_runtime_part: Any, normalised_parameters: dict[str, Any],
                     state_credentials: Any) -> None:  # fmt: skip
        denied = may_start(str(normalised_parameters.get("stateMachineArn")))
        if denied is not None:
            raise ClientError(
                {
                    "Error": {"Code": "AccessDenied", "Message": denied},
                    "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "local"},
                },
                "StartExecution",
            )
        eval_service_task(self, env=env, resource_runtime_part=resource_runtime_part,
                          normalised_parameters=normalised_parameters, state_credentials=state_credentials)  # fmt: skip
        _as_asl(env.stack[-1])

    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

    with (
        # moto polls a .sync child every 0.5 s; AWS learns of its end from an event. Every run with work would wait
        # for a poll once locally, up to half a second that is neither the pipeline's nor AWS's.
        mock.patch.object(state_task_service_callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", SYNC_POLL_SECONDS),
        mock.patch.object(StateTaskServiceSfn, "_normalise_parameters", parameters),
        mock.patch.object(StateTaskServiceSfn, "_normalise_response", response),
        mock.patch.object(StateTaskServiceSfn, "_eval_service_task", service_task),
    ):
        yield

"""Each Lambda task of a local execution, run by the real handler in-process, as its function would run in AWS.

moto's Step Functions interpreter invokes a function through moto's Lambda (statemachine/local/internals.py
routes that call here); the :class:`Dispatcher` then runs that function's handler with the event it would get in
AWS, inside the function's sandbox (its own environment and policy: statemachine/local/sandbox.py), and answers
as Lambda does: the handler's result, or its exception as the function's error, which the state machine's Retry
and Catch see by name. Every invocation is recorded (:class:`Invocation`) for the progress lines and the report.
"""

from __future__ import annotations

import importlib
import io
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from lambdas.extract.run_plan import ACTION_PLAN
from statemachine.local import iam, sandbox
from statemachine.local.deployment import ACCOUNT, LOCAL_FUNCTION_NAMES, REGION, Deployment
from statemachine.local.lake import LakeMirror

__all__ = ["FUNCTIONS", "PLAN_STAGE", "STAGE_OF", "Dispatcher", "Invocation", "LambdaContext", "load_handlers"]

# placeholder in the ASL -> (function name, handler module); checked against the synthesized handlers on deploy
FUNCTIONS: dict[str, tuple[str, str]] = {
    f"{stage.capitalize()}FunctionArn": (name, f"lambdas.{stage}.handler")
    for stage, name in LOCAL_FUNCTION_NAMES.items()
}
STAGE_OF = {name: stage for stage, name in LOCAL_FUNCTION_NAMES.items()}
PLAN_STAGE = "plan"

Handler = Callable[..., Any]


@dataclass
class Invocation:
    """One Lambda invocation as the dispatcher saw it (for progress and the report)."""

    execution_id: str
    stage: str
    table: str
    started: float
    seconds: float
    ok: bool
    result: dict[str, Any]
    step: str = ""  # one step of a table's work that takes several invocations (a partitioned extract's range)
    calls: dict[str, int] = field(default_factory=dict)  # its AWS requests by IAM action, e.g. s3:GetObject


def step_of(payload: dict[str, Any]) -> str:
    """The step of a partitioned extract after its plan ("range 3", "commit"); "" for a table's usual invocation."""
    action = payload.get("action")
    if not isinstance(action, str) or "table" not in payload:
        return ""
    item = payload.get("range")
    return f"range {item.get('range')}" if isinstance(item, dict) else action


def stage_of(function_name: str, payload: dict[str, Any]) -> str:
    """The stage an invocation belongs to: its function's, except the run's plan (the extract function's, but no
    table's extract)."""
    return PLAN_STAGE if payload.get("action") == ACTION_PLAN else STAGE_OF.get(function_name, function_name)


@dataclass
class LambdaContext:
    """The parts of a LambdaContext the handlers (and Powertools) read."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _function_error(exc: Exception) -> dict[str, Any]:
    """A handler's exception as Lambda reports it to the state machine."""
    return {"errorType": type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)[-3:]}  # fmt: skip


class Dispatcher:
    """Runs the real handler for each invocation moto's Lambda receives, as its function."""

    def __init__(self, handlers: dict[str, Handler], mirror: LakeMirror, deployment: Deployment,
                 process: Mapping[str, str], on_invocation: Callable[[Invocation], None]) -> None:  # fmt: skip
        self.handlers, self.mirror, self.on_invocation = handlers, mirror, on_invocation
        self.deployment, self.process = deployment, process
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()

    def __call__(self, function: Any, event: Any = None) -> tuple[str, bool, str]:
        """moto's Lambda invocation: (the payload as JSON, whether it is the function's error, no log tail)."""
        name = function.function_name
        payload = event if isinstance(event, dict) else json.loads(event or "{}")
        started = time.monotonic()
        ok, body, calls = self._invoke(function, payload)
        invocation = Invocation(
            execution_id=str(payload.get("execution_id", "")),
            stage=stage_of(name, payload),
            table=str(payload.get("table") or payload.get("action") or ""),  # lease and report: what they were asked
            started=started,
            seconds=time.monotonic() - started,
            ok=ok,
            result=body,
            step=step_of(payload),
            calls=calls,
        )
        with self._lock:
            self.invocations.append(invocation)
        self.on_invocation(invocation)
        return json.dumps(body, default=str), not ok, ""

    def _invoke(self, function: Any, payload: dict[str, Any]) -> tuple[bool, dict[str, Any], dict[str, int]]:
        name = function.function_name
        for machine, statements in self._invokers(name, payload):
            if not iam.allows(statements, "lambda:InvokeFunction", function.function_arn):
                message = iam.denial(f"state machine {machine}", "lambda:InvokeFunction", function.function_arn)
                return False, {"errorType": "AccessDeniedException", "errorMessage": message}, {}
        try:
            with sandbox.invocation(self.deployment.by_name(name), self.process) as running:
                try:
                    ok, body = True, self.handlers[name](payload, LambdaContext(name))
                except Exception as exc:  # reported to the state machine as the Lambda's error, as AWS does
                    ok, body = False, _function_error(exc)
            if running.denied:  # even if the handler caught the AccessDenied: the run must show the missing grant
                ok, body = False, {"errorType": "AccessDenied", "errorMessage": running.denied[0]}
        finally:
            self.mirror.flush()
        return ok, body, dict(running.calls)

    def _invokers(self, name: str, payload: dict[str, Any]) -> list[tuple[str, tuple[dict[str, Any], ...]]]:
        """The state machines that invoke this function with this event: the parent plans, takes and releases the
        lease and reports; a table's work is either child's, which are deployed from one definition."""
        deployment = self.deployment
        if STAGE_OF.get(name) in ("lease", "report") or payload.get("action") == ACTION_PLAN:
            return [(deployment.state_machine_name, deployment.state_machine_statements)]
        return [(deployment.children[w][0], deployment.children_statements[w]) for w in deployment.children]

    def may_start(self, state_machine_arn: str) -> str | None:
        """Why the parent may not start this child (the AccessDenied AWS would give), or None."""
        if iam.allows(self.deployment.state_machine_statements, "states:StartExecution", state_machine_arn):
            return None
        return iam.denial(f"state machine {self.deployment.state_machine_name}", "states:StartExecution",
                          state_machine_arn)  # fmt: skip


def load_handlers(stack: ExitStack, log_stream: io.TextIOBase, deployment: Deployment,
                  process: Mapping[str, str]) -> dict[str, Handler]:  # fmt: skip
    """The real handlers, imported in their function's environment (Powertools reads it at import), their logs
    sent to the run's log file for the duration of the run."""
    handlers = {}
    for function_name, module_name in FUNCTIONS.values():
        spec = deployment.by_name(function_name)
        if spec.handler != f"{module_name}.handler":
            raise RuntimeError(f"the stack's {function_name} runs {spec.handler}, the local runner {module_name}")
        with sandbox.invocation(spec, process):
            module = importlib.import_module(module_name)
        previous = module.logger.registered_handler.setStream(log_stream)
        stack.callback(module.logger.registered_handler.setStream, previous)
        handlers[function_name] = module.handler
    return handlers

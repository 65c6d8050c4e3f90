"""Execute `pipeline.asl.json` on moto's Step Functions interpreter, with the real handlers in-process.

Everything AWS is moto (S3, Secrets Manager, Lambda, IAM, Step Functions); each Lambda task of the
execution is dispatched to the real handler with the event it would get in AWS. The buckets persist in
the lake directory between runs, so a second run is incremental.

What is deployed is read from the synthesized CDK stack (statemachine.local.deployment): each handler runs with
its own function's environment variables, and each AWS call it makes is authorised against its own function's
policy (statemachine.local.sandbox); each invocation against the state machine's policy.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from botocore.client import BaseClient

from lambdas.common.db import forget_secrets
from lambdas.common.lake import s3_client
from lambdas.extract.run_plan import ACTION_PLAN
from statemachine import definition
from statemachine.history import with_children
from statemachine.local import moto_sfn, sandbox
from statemachine.local.deployment import (
    ACCOUNT,
    ALERT_TOPIC,
    CHILD_PLACEHOLDERS,
    INGESTION_BUCKET,
    LOCAL_FUNCTION_NAMES,
    PROCESSED_BUCKET,
    REGION,
    Deployment,
    synthesized_deployment,
    topic_arn,
)
from statemachine.local.lake import LakeMirror
from statemachine.local.redact import Redacting

__all__ = ["INGESTION_BUCKET", "PROCESSED_BUCKET", "REGION", "Invocation", "RunOutcome", "local_pipeline", "run"]

# placeholder in the ASL -> (function name, handler module); checked against the synthesized handlers on deploy
FUNCTIONS: dict[str, tuple[str, str]] = {
    f"{stage.capitalize()}FunctionArn": (name, f"lambdas.{stage}.handler")
    for stage, name in LOCAL_FUNCTION_NAMES.items()
}
STAGE_OF = {name: stage for stage, name in LOCAL_FUNCTION_NAMES.items()}
PLAN_STAGE = "plan"


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


@dataclass
class RunOutcome:
    status: str
    execution_arn: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]
    invocations: list[Invocation] = field(default_factory=list)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (subject, message) published to the alert topic

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def __repr__(self) -> str:  # what a failing test shows first: the status and why
        return f"RunOutcome(status={self.status!r}, error={self.error!r}, cause={self.cause!r})"


@dataclass
class _Context:
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


class Dispatcher:
    """Replaces moto's Docker-based Lambda invocation with a call to the real handler, as its function."""

    def __init__(self, handlers: dict[str, Callable[..., Any]], mirror: LakeMirror, deployment: Deployment,
                 process: Mapping[str, str], on_invocation: Callable[[Invocation], None]) -> None:  # fmt: skip
        self.handlers, self.mirror, self.on_invocation = handlers, mirror, on_invocation
        self.deployment, self.process = deployment, process
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()

    def __call__(self, function: Any, event: Any = None) -> tuple[str, bool, str]:
        name = function.function_name
        payload = event if isinstance(event, dict) else json.loads(event or "{}")
        started = time.monotonic()
        ok, body, calls = self._invoke(function, payload)
        invocation = Invocation(
            execution_id=str(payload.get("execution_id", "")),
            # the run's plan is the extract function's, but no table's extract
            stage=PLAN_STAGE if payload.get("action") == ACTION_PLAN else STAGE_OF.get(name, name),
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
            if not sandbox.allows(statements, "lambda:InvokeFunction", function.function_arn):
                message = sandbox.denial(f"state machine {machine}", "lambda:InvokeFunction", function.function_arn)
                return False, {"errorType": "AccessDeniedException", "errorMessage": message}, {}
        try:
            with sandbox.invocation(self.deployment.by_name(name), self.process) as running:
                try:
                    result = self.handlers[name](payload, _Context(name))
                    ok, body = True, result
                except Exception as exc:  # reported to the state machine as the Lambda's error, as AWS does
                    ok = False
                    body = {"errorType": type(exc).__name__, "errorMessage": str(exc),
                            "stackTrace": traceback.format_exception(exc)[-3:]}  # fmt: skip
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
        if sandbox.allows(self.deployment.state_machine_statements, "states:StartExecution", state_machine_arn):
            return None
        return sandbox.denial(f"state machine {self.deployment.state_machine_name}", "states:StartExecution",
                              state_machine_arn)  # fmt: skip


@contextmanager
def _quiet_moto() -> Any:
    """moto's ASL interpreter logs its whole parse tree at ERROR for every failed state."""
    noisy = [logging.getLogger(n) for n in ("moto.stepfunctions.parser", "moto", "botocore", "urllib3")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)


def _load_handlers(stack: ExitStack, log_stream: io.TextIOBase, deployment: Deployment,
                   process: Mapping[str, str]) -> dict[str, Callable[..., Any]]:  # fmt: skip
    """The real handlers, imported in their function's environment (Powertools reads it at import), their logs
    sent to the run's log file for the duration of the run."""
    import importlib

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


class LocalPipeline:
    """The deployed stack, in moto: start executions of the real definition and wait for them."""

    def __init__(self, dispatcher: Dispatcher, mirror: LakeMirror, state_machine_arn: str, log_path: Path) -> None:
        self.dispatcher, self.mirror, self.state_machine_arn = dispatcher, mirror, state_machine_arn
        self.log_path = log_path  # the Lambdas' logs of every execution of this deployment
        self.sfn = boto3.client("stepfunctions", region_name=REGION)

    def start(self, execution_input: dict[str, Any]) -> str:
        name = f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        started = self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                           input=json.dumps(execution_input))  # fmt: skip
        return started["executionArn"]

    def wait(self, execution_arn: str) -> RunOutcome:
        while (described := self.sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
            time.sleep(0.05)
        self.mirror.flush()
        return self._outcome(described)

    def stop(self, execution_arn: str) -> RunOutcome:
        """Stop the execution (ABORTED, as StopExecution leaves it in AWS) and return it as far as it got; its
        invocations in flight may still finish, and everything they write goes to the lake as it would to S3."""
        running = self.sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
        if running:
            self.sfn.stop_execution(executionArn=execution_arn, error="Interrupted", cause="Ctrl-C")
        described = self.sfn.describe_execution(executionArn=execution_arn)
        # An execution stopped while running is ABORTED, as AWS says. moto's interpreter may instead leave it
        # RUNNING until its current state ends, or end it FAILED by the error the stop injects, depending on
        # the moment: the status is the one the stop gives, not the emulator's.
        return self._outcome({**described, "status": "ABORTED" if running else described["status"]})

    def _outcome(self, described: dict[str, Any]) -> RunOutcome:
        execution_arn = described["executionArn"]
        output = json.loads(described["output"]) if described.get("output") else None
        invocations = [i for i in self.dispatcher.invocations if i.execution_id == execution_arn]
        alerts = [(subject, body) for subject, body in _alerts() if execution_arn in body]
        return RunOutcome(described["status"], execution_arn, output, described.get("error"), described.get("cause"),
                          with_children(self.sfn, execution_arn), invocations, alerts)  # fmt: skip


@contextmanager
def local_pipeline(
    *,
    source: dict[str, Any],
    warehouse: dict[str, Any],
    lake_dir: Path,
    on_invocation: Callable[[Invocation], None] = lambda _: None,
    handlers: dict[str, Callable[..., Any]] | None = None,
    deployment: Deployment | None = None,
) -> Iterator[LocalPipeline]:
    """Deploy into moto what CDK deploys into AWS; `handlers` replaces some functions' code (by name).

    `deployment` is the synthesized stack (synthesized, or read from the cache, when not given).
    """
    from moto import mock_aws
    from moto.awslambda.models import LambdaFunction

    deployment = deployment or synthesized_deployment()
    for statements in (deployment.state_machine_statements, *deployment.children_statements.values(),
                       *(f.statements for f in deployment.functions.values())):  # fmt: skip
        sandbox.check_statements(statements)
    forget_secrets()  # every local deployment is fresh, possibly with other databases
    s3_client.cache_clear()
    log_path = lake_dir / "logs" / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    mirror = LakeMirror(lake_dir, [INGESTION_BUCKET, PROCESSED_BUCKET])
    with ExitStack() as stack:
        passwords = [str(c["password"]) for c in (source, warehouse) if c.get("password")]
        log_stream = Redacting(stack.enter_context(log_path.open("a", encoding="utf-8")), passwords)
        # The runner's own clients (deploying, mirroring, starting executions) use moto's credentials; inside an
        # invocation os.environ is that function's environment only.
        process = os.environ
        stack.enter_context(mock.patch.dict(process, sandbox.RUNTIME_ENVIRONMENT))
        stack.enter_context(mock.patch.object(os, "environ", sandbox.FunctionEnviron(process)))
        stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
        stack.enter_context(mirror.write_through())
        stack.enter_context(mock.patch.object(BaseClient, "_make_api_call", sandbox.guarded(BaseClient._make_api_call)))
        stack.enter_context(_quiet_moto())
        loaded = _load_handlers(stack, log_stream, deployment, process)
        dispatcher = Dispatcher({**loaded, **(handlers or {})}, mirror, deployment, process, on_invocation)
        stack.enter_context(mock.patch.object(LambdaFunction, "_invoke_lambda", _bind(dispatcher)))
        stack.enter_context(moto_sfn.sync_children(dispatcher.may_start))
        yield LocalPipeline(dispatcher, mirror, _deploy(mirror, source, warehouse, deployment), log_path)


def run(
    *,
    source: dict[str, Any],
    warehouse: dict[str, Any],
    lake_dir: Path,
    execution_input: dict[str, Any],
    on_invocation: Callable[[Invocation], None] = lambda _: None,
    handlers: dict[str, Callable[..., Any]] | None = None,
    deployment: Deployment | None = None,
    on_interrupt: Callable[[RunOutcome], None] | None = None,
) -> RunOutcome:
    """One execution of the deployed definition; returns when it has finished.

    Its Lambdas' logs are left in `<lake_dir>/logs/<execution name>.jsonl`, so the name a run prints finds them.
    On Ctrl-C the execution is stopped and `on_interrupt` gets it, still inside the deployment (the invocations in
    flight run on; the local command keeps the execution and ends the process), then KeyboardInterrupt goes on.
    """
    with local_pipeline(source=source, warehouse=warehouse, lake_dir=lake_dir, on_invocation=on_invocation,
                        handlers=handlers, deployment=deployment) as pipeline:  # fmt: skip
        execution_arn = pipeline.start(execution_input)
        try:
            outcome = pipeline.wait(execution_arn)
        except KeyboardInterrupt:
            stopped = pipeline.stop(execution_arn)
            _name_logs(pipeline.log_path, stopped)  # renaming an open file: the invocations in flight log on
            if on_interrupt is not None:
                on_interrupt(stopped)
            raise
    _name_logs(pipeline.log_path, outcome)
    return outcome


def _name_logs(log_path: Path, outcome: RunOutcome) -> None:
    log_path.rename(log_path.with_name(f"{outcome.execution_arn.rsplit(':', 1)[-1]}.jsonl"))


def _bind(dispatcher: Dispatcher) -> Callable[..., tuple[str, bool, str]]:
    def invoke(function: Any, event: Any = None) -> tuple[str, bool, str]:
        return dispatcher(function, event)

    return invoke


def _deploy(mirror: LakeMirror, source: dict[str, Any], warehouse: dict[str, Any], deployment: Deployment) -> str:
    """Create in moto what the CDK stack creates in AWS, and return the state machine's ARN."""
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in mirror.buckets:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    mirror.restore(s3)
    boto3.client("sns", region_name=REGION).create_topic(Name=ALERT_TOPIC)
    secrets = boto3.client("secretsmanager", region_name=REGION)
    # The secrets are created under the names the functions are configured with (cdk.json's context).
    secrets.create_secret(Name=deployment.functions["extract"].environment["TOTESYS_SECRET_ID"],
                          SecretString=json.dumps(source))  # fmt: skip
    secrets.create_secret(Name=deployment.functions["load"].environment["WAREHOUSE_SECRET_ID"],
                          SecretString=json.dumps(warehouse))  # fmt: skip
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="totesys-local", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("index.py", "# the real code runs in-process; see statemachine/local/runner.py\n")
    lam = boto3.client("lambda", region_name=REGION)
    arns = {}
    for placeholder, (function_name, module_name) in FUNCTIONS.items():
        created = lam.create_function(
            FunctionName=function_name,
            Runtime="python3.12",
            Role=role,
            Handler=f"{module_name}.handler",
            Code={"ZipFile": archive.getvalue()},
        )
        arns[placeholder] = created["FunctionArn"]
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stages = {name: arn for name, arn in arns.items() if name in definition.placeholders(definition.STAGES)}
    for workflow, (name, machine_type) in deployment.children.items():  # the children first: the parent names them
        arns[CHILD_PLACEHOLDERS[workflow]] = sfn.create_state_machine(
            name=name, type=machine_type, definition=definition.render(stages, definition.STAGES), roleArn=role
        )["stateMachineArn"]
    used = {name: arn for name, arn in arns.items() if name in definition.placeholders(definition.PIPELINE)}
    created = sfn.create_state_machine(name=deployment.state_machine_name, definition=definition.render(used),
                                       roleArn=role)  # fmt: skip
    return created["stateMachineArn"]


def _alerts() -> list[tuple[str, str]]:
    from moto.sns.models import sns_backends

    topic = sns_backends[ACCOUNT][REGION].topics[topic_arn()]
    return [(subject or "", message) for _, message, subject, _, _ in topic.sent_notifications]

"""Execute `pipeline.asl.json` on moto's Step Functions interpreter, with the real handlers in-process.

The idea: deploy into moto what the CDK stack deploys into AWS, start an execution of the real definition, wait
for it, and return how it went (:class:`RunOutcome`). Everything AWS is moto (S3, Secrets Manager, Lambda, IAM,
Step Functions); the buckets persist in the lake directory between runs, so a second run is incremental.

The parts, each in its own module:

- what is deployed: the synthesized CDK stack (statemachine/local/deployment.py), created in moto by `_deploy`;
- each Lambda task of the execution: the real handler, run in-process with the event it would get in AWS
  (statemachine/local/dispatch.py), inside its function's sandbox, its own environment variables and each AWS
  call authorised against its own policy (statemachine/local/sandbox.py); each invocation is authorised against
  the state machine's policy;
- the hooks into moto's and botocore's internals that make this possible without Docker
  (statemachine/local/internals.py).
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import boto3

from lambdas.common.db import forget_secrets
from lambdas.common.lake import s3_client
from statemachine import definition
from statemachine.history import with_children
from statemachine.local import internals, moto_sfn, sandbox
from statemachine.local.deployment import (
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
from statemachine.local.dispatch import FUNCTIONS, PLAN_STAGE, STAGE_OF, Dispatcher, Invocation, load_handlers, step_of
from statemachine.local.dispatch import LambdaContext as _Context
from statemachine.local.lake import LakeMirror
from statemachine.local.redact import Redacting

__all__ = [
    "FUNCTIONS",
    "INGESTION_BUCKET",
    "LOCAL_FUNCTION_NAMES",
    "PLAN_STAGE",
    "PROCESSED_BUCKET",
    "REGION",
    "STAGE_OF",
    "Dispatcher",
    "Invocation",
    "LocalPipeline",
    "RunOutcome",
    "_Context",
    "local_pipeline",
    "run",
    "step_of",
]


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
        alerts = [
            (subject, body) for subject, body in internals.sent_notifications(topic_arn()) if execution_arn in body
        ]
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
        stack.enter_context(internals.authorising_api_calls(sandbox.guarded))
        stack.enter_context(internals.quiet_moto())
        loaded = load_handlers(stack, log_stream, deployment, process)
        dispatcher = Dispatcher({**loaded, **(handlers or {})}, mirror, deployment, process, on_invocation)
        stack.enter_context(internals.invoking_lambdas_with(dispatcher))
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

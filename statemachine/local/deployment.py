"""The synthesized CDK stack, as the local run deploys it: each function's environment and IAM policy.

The local runner does not describe the deployment a second time: it synthesizes the real app (app.py with the
context of cdk.json, as `cdk synth` does) and reads, per function, the environment variables and the policy
statements CloudFormation would create. Synthesis costs 10-25 s (jsii and Node), so the template is cached under
a key made of every file the stack is built from; a second run, or a second test, reads the cached JSON.

CloudFormation tokens (a bucket's name, a topic's ARN, a function's ARN, the account) mean nothing locally; they
are mapped onto the local resources by :func:`local_values`, the one place that says which local resource stands
for which construct of the stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the synthesized template depends on: the app, its context, the constructs, the code they package and the
# definition they deploy. A change to any of these files is a new cache key.
STACK_SOURCES = (
    "app.py",
    "cdk.json",
    "cdk",
    "lambdas",
    "analytics",
    "statemachine/pipeline.asl.json",
    "statemachine/stages.asl.json",
    "statemachine/local/deployment.py",
)
STACK_PACKAGES = ("aws-cdk-lib", "cdk-nag", "constructs")
CACHE_ENV = "TOTESYS_SYNTH_CACHE"  # where synthesized templates are kept; default <repo>/.cache/synth
SYNTH_TIMEOUT_SECONDS = 300

REGION = "eu-west-2"
ACCOUNT = "123456789012"  # moto's default account
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                     "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "TotesysEtl"}  # fmt: skip


class SynthError(RuntimeError):
    """The app did not synthesize (a cdk-nag finding, a configuration error): the local run cannot start."""


def _source_files() -> list[Path]:
    files: list[Path] = []
    for name in STACK_SOURCES:
        path = REPO_ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [f for f in candidates if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return files


def cache_key(context: Mapping[str, Any] | None = None) -> str:
    """A hash of every file the stack is built from, the CDK library versions and the context overrides."""
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    for package in STACK_PACKAGES:
        digest.update(f"{package}={metadata.version(package)}\0".encode())
    digest.update(json.dumps(dict(context or {}), sort_keys=True).encode())
    return digest.hexdigest()[:24]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "synth")


def _cached(context: Mapping[str, Any] | None) -> Path:
    return cache_dir() / f"{cache_key(context)}.template.json"


def is_cached(context: Mapping[str, Any] | None = None) -> bool:
    return _cached(context).is_file()


def synthesized_template(context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stack's CloudFormation template, synthesized with cdk.json's context plus ``context``; cached."""
    cached = _cached(context)
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    # A child process: jsii's Node runtime and the CDK's memory stay out of the run (and out of moto's patches).
    done = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "statemachine.local.deployment", str(partial), json.dumps(dict(context or {}))],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SYNTH_TIMEOUT_SECONDS, check=False,
        env={k: v for k, v in os.environ.items() if k != "CDK_CONTEXT_JSON"},  # the context is all in the key
    )  # fmt: skip
    if done.returncode != 0 or not partial.is_file():
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip() and "Node" not in line]
        raise SynthError("the CDK app did not synthesize: " + "\n".join(lines[-15:]))
    partial.replace(cached)  # atomic: a concurrent run reads a whole template or synthesizes its own
    return json.loads(cached.read_text(encoding="utf-8"))


def _synthesize_into(target: Path, context: dict[str, Any]) -> None:
    import tempfile

    import aws_cdk as cdk

    from app import build_app, cdk_json_context
    from cdk.config import RUNTIME_CAS

    with tempfile.TemporaryDirectory(prefix="totesys-synth-") as outdir:
        # Path metadata (as the CDK CLI adds it) names each resource's construct: how local_values finds them.
        # The local databases are reached over unix sockets, without TLS: no CA bundle to ship (docs/deploy.md).
        settings = {**cdk_json_context(), "database_ca_bundle": RUNTIME_CAS, **context,
                    "aws:cdk:enable-path-metadata": True}  # fmt: skip
        app = cdk.App(context=settings, outdir=outdir)
        stack = build_app(app)
        template = app.synth().get_stack_by_name(stack.stack_name).template
    target.write_text(json.dumps(template, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    _synthesize_into(Path(sys.argv[1]), json.loads(sys.argv[2]))


# The one mapping from the stack's constructs (by construct path under the stack) to the local resources that
# stand for them. Anything else a template value refers to has no local counterpart: an environment variable
# naming it is an error; a policy resource naming it matches nothing.
INGESTION_BUCKET = "totesys-local-ingestion"
PROCESSED_BUCKET = "totesys-local-processed"
ALERT_TOPIC = "totesys-etl-alerts"
LOCAL_FUNCTION_NAMES = {"extract": "totesys-extract", "transform": "totesys-transform", "load": "totesys-load",
                        "report": "totesys-report", "lease": "totesys-lease"}  # fmt: skip
FUNCTION_CONSTRUCTS = {stage: f"Functions/{stage.capitalize()}/Resource" for stage in LOCAL_FUNCTION_NAMES}
BUCKET_CONSTRUCTS = {"Storage/IngestionBucket/Resource": INGESTION_BUCKET,
                     "Storage/ProcessedBucket/Resource": PROCESSED_BUCKET}  # fmt: skip
TOPIC_CONSTRUCT = "Alerts/Topic/Resource"
STATE_MACHINE_CONSTRUCT = "Workflow/StateMachine/Resource"
# The parent's two children, by the plan's word for them (statemachine/definition.py: CHILD_ARN).
CHILD_CONSTRUCTS = {"express": "Workflow/StagesExpress/Resource", "standard": "Workflow/StagesStandard/Resource"}
CHILD_PLACEHOLDERS = {"express": "StagesExpressArn", "standard": "StagesStandardArn"}


def function_arn(stage: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{LOCAL_FUNCTION_NAMES[stage]}"


def state_machine_arn(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


def topic_arn() -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT}:{ALERT_TOPIC}"


def _construct_paths(template: Mapping[str, Any]) -> dict[str, str]:
    """Logical id -> construct path below the stack (e.g. 'Storage/IngestionBucket/Resource')."""
    paths = {}
    for logical, resource in template["Resources"].items():
        path = (resource.get("Metadata") or {}).get("aws:cdk:path")
        if path:
            paths[logical] = path.split("/", 1)[1]
    return paths


def local_values(template: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(logical id, 'Ref' or an attribute) -> the local value CloudFormation would have put there."""
    by_path = {path: logical for logical, path in _construct_paths(template).items()}
    missing = [p for p in (*BUCKET_CONSTRUCTS, TOPIC_CONSTRUCT, *FUNCTION_CONSTRUCTS.values()) if p not in by_path]
    if missing:
        raise SynthError(f"the synthesized stack has no construct {missing[0]!r}: update the local mapping")
    values: dict[tuple[str, str], str] = {}
    for path, bucket in BUCKET_CONSTRUCTS.items():
        values[(by_path[path], "Ref")] = bucket
        values[(by_path[path], "Arn")] = f"arn:aws:s3:::{bucket}"
    values[(by_path[TOPIC_CONSTRUCT], "Ref")] = topic_arn()
    values[(by_path[TOPIC_CONSTRUCT], "TopicArn")] = topic_arn()
    for stage, path in FUNCTION_CONSTRUCTS.items():
        values[(by_path[path], "Ref")] = LOCAL_FUNCTION_NAMES[stage]
        values[(by_path[path], "Arn")] = function_arn(stage)
    for path in (STATE_MACHINE_CONSTRUCT, *CHILD_CONSTRUCTS.values()):
        if path in by_path:
            logical = by_path[path]
            arn = state_machine_arn(template["Resources"][logical]["Properties"]["StateMachineName"])
            values[(logical, "Ref")] = values[(logical, "Arn")] = arn
    values.update({(name, "Ref"): value for name, value in PSEUDO_PARAMETERS.items()})
    return values


class Unresolved(ValueError):
    """A template value refers to something that has no local counterpart."""


def resolve(value: Any, values: Mapping[tuple[str, str], str]) -> str:
    """A CloudFormation value (string, Ref, Fn::GetAtt, Fn::Join) as the local deployment's string."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref" and (argument, "Ref") in values:
            return values[(argument, "Ref")]
        if function == "Fn::GetAtt" and tuple(argument) in values:
            return values[tuple(argument)]
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(resolve(part, values) for part in parts)
    raise Unresolved(f"no local counterpart for {json.dumps(value)}")


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the synthesized stack, with its values mapped onto the local deployment."""

    stage: str
    name: str  # the local function name
    handler: str  # as in the template, e.g. 'lambdas.extract.handler.handler'
    environment: dict[str, str]
    statements: tuple[dict[str, Any], ...]  # its role's policy statements, resources resolved


@dataclass(frozen=True)
class Deployment:
    functions: dict[str, FunctionSpec]  # by stage
    state_machine_name: str  # as the stack names it: the lease's DescribeExecution grant is built from it
    state_machine_statements: tuple[dict[str, Any], ...]
    # the children that run the tables' work, by the plan's word for them ('express', 'standard'): (name, type)
    children: dict[str, tuple[str, str]] = field(default_factory=dict)
    children_statements: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)

    def by_name(self, name: str) -> FunctionSpec:
        (spec,) = [f for f in self.functions.values() if f.name == name]
        return spec

    def with_environment(self, stage: str, **variables: str) -> Deployment:
        """The same deployment with some of one function's variables set otherwise (what a test may need that no
        valid context gives, e.g. a held-row age of 0 s)."""
        spec = self.functions[stage]
        changed = replace(spec, environment={**spec.environment, **variables})
        return replace(self, functions={**self.functions, stage: changed})

    def with_statements(self, stage: str, statements: tuple[dict[str, Any], ...]) -> Deployment:
        """The same deployment with one function's policy replaced (tests remove a grant with it)."""
        return replace(self, functions={**self.functions, stage: replace(self.functions[stage], statements=statements)})


def _resolved_statement(statement: Mapping[str, Any], values: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    resources = statement.get("Resource", [])
    resolved = []
    for resource in resources if isinstance(resources, list) else [resources]:
        try:
            resolved.append(resolve(resource, values))
        except Unresolved:
            resolved.append(f"<no local counterpart: {json.dumps(resource, sort_keys=True)}>")
    return {**statement, "Resource": resolved}


def _role_statements(template: Mapping[str, Any], role: Any, values: Mapping[tuple[str, str], str]) -> tuple:
    """Every inline policy statement of a role (``{"Fn::GetAtt": [role, "Arn"]}``); managed policies are refused."""
    role_id = role["Fn::GetAtt"][0]
    properties = template["Resources"][role_id]["Properties"]
    if properties.get("ManagedPolicyArns"):
        raise SynthError(f"role {role_id} has managed policies, which the local run cannot evaluate")
    statements = [s for p in properties.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"].get("Roles", []):
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    return tuple(_resolved_statement(s, values) for s in statements)


def deployment(template: Mapping[str, Any]) -> Deployment:
    """Each function's environment and policy, and the state machine's policy, mapped onto the local resources."""
    values = local_values(template)
    paths = _construct_paths(template)
    functions = {}
    for stage, path in FUNCTION_CONSTRUCTS.items():
        (logical,) = [lid for lid, p in paths.items() if p == path]
        properties = template["Resources"][logical]["Properties"]
        raw = (properties.get("Environment") or {}).get("Variables", {})
        try:
            environment = {name: resolve(value, values) for name, value in raw.items()}
        except Unresolved as error:
            raise SynthError(f"the {stage} function's environment: {error}") from error
        functions[stage] = FunctionSpec(stage, LOCAL_FUNCTION_NAMES[stage], properties["Handler"], environment,
                                        _role_statements(template, properties["Role"], values))  # fmt: skip
    by_path = {path: logical for logical, path in paths.items()}
    machine_properties = template["Resources"][by_path[STATE_MACHINE_CONSTRUCT]]["Properties"]
    children, children_statements = {}, {}
    for workflow, path in CHILD_CONSTRUCTS.items():
        if path not in by_path:
            raise SynthError(f"the synthesized stack has no construct {path!r}: update the local mapping")
        properties = template["Resources"][by_path[path]]["Properties"]
        children[workflow] = (properties["StateMachineName"], properties.get("StateMachineType", "STANDARD"))
        children_statements[workflow] = _role_statements(template, properties["RoleArn"], values)
    return Deployment(functions, machine_properties["StateMachineName"],
                      _role_statements(template, machine_properties["RoleArn"], values), children,
                      children_statements)  # fmt: skip


def synthesized_deployment(context: Mapping[str, Any] | None = None) -> Deployment:
    return deployment(synthesized_template(context))

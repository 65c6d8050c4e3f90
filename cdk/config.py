"""The CDK app's configuration: a pydantic model of the CDK context, read and validated once by ``app.py``.

The context is flat (``cdk.json`` and ``cdk synth -c key=value``); the model groups what belongs together
(the databases' network, the lake's retention, QuickSight, where each database is) into small models that the
constructs receive as they are. Each setting is declared once, on its model: its type, default, constraints and
the sentence that documents it (``docs/deploy.md``'s table is generated from them: ``python -m cdk.config``).
Rules across settings sit on the model they concern.

Values arrive as JSON types from ``cdk.json`` and as strings from the command line; both are accepted. A bad
context stops the synth before anything is built, with one message listing every problem (:func:`_lines`
turns pydantic's errors into those lines, naming the context key, the value and what is expected). A key of
our form (snake_case) that names no setting is refused with the setting it resembles: a misspelt key would
otherwise be ignored in silence and its default deployed.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from cdk.workflow import STATE_MACHINE_NAME_MAX_LENGTH, STATE_MACHINE_NAME_SUFFIX
from lambdas.common.tables import SOURCE_TABLES
from lambdas.extract.partitioned import DEFAULT_PARTITION_ROWS
from lambdas.extract.signal import DEFAULT_MAX_AGE_SECONDS as DEFAULT_SIGNAL_MAX_AGE_SECONDS
from lambdas.load.held import DEFAULT_STUCK_AFTER_SECONDS

# Retention periods that CloudWatch Logs accepts (days).
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
# S3 moves objects to STANDARD_IA no earlier than 30 days after creation.
MIN_TRANSITION_DAYS = 30
# Expiring current data objects is only safe far behind the slowest reader (see docs/deploy.md).
MIN_EXPIRATION_DAYS = 365
# Lambda accepts at most 16 subnets and 5 security groups per function.
MAX_SUBNETS = 16
MAX_SECURITY_GROUPS = 5
# A QuickSight VPC connection needs subnets in at least two availability zones.
MIN_QUICKSIGHT_SUBNETS = 2
# CloudFormation allows 128 characters, but the state machine is named '<stack_name>-pipeline' (at most 80).
MAX_STACK_NAME_LENGTH = STATE_MACHINE_NAME_MAX_LENGTH - len(STATE_MACHINE_NAME_SUFFIX)

RUNTIME_CAS = "runtime"  # database_ca_bundle: trust the Lambda runtime's public CAs (no bundle shipped)
MISSING_CA_BUNDLE = (
    "database_ca_bundle is not set, and the functions verify the databases' certificates (sslmode verify-full): "
    "add -c database_ca_bundle=global-bundle.pem (RDS: the global bundle, see docs/deploy.md) "
    f"or -c database_ca_bundle={RUNTIME_CAS} (certificates signed by a public CA)"
)


class ConfigError(ValueError):
    """The CDK context does not describe a deployable pipeline; the message lists every problem."""


# --- How a problem is reported --------------------------------------------------------------------------------
# Two kinds of error, each rendered by _lines: a value that is wrong ("<key> <value> <expected>"), and broken
# rules (each message alone: it names the keys itself).


def _wrong(expected: str, **context: Any) -> PydanticCustomError:
    """The value is not what ``expected`` says (``value``/``index`` in context: one item of a list)."""
    return PydanticCustomError("context_value", "{expected}", {"expected": expected, **context})


def _rules(*messages: str) -> PydanticCustomError:
    return PydanticCustomError("context_rules", "{count} rules broken", {"count": len(messages), "lines": messages})


# --- Value types: what each kind of setting accepts, from cdk.json (JSON) or from -c key=value (a string) -----


def _pattern(regex: str, expected: str) -> Any:
    """A string that matches ``regex`` entirely."""
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        if isinstance(value, str) and compiled.fullmatch(value):
            return value
        raise _wrong(expected)

    return Annotated[str, BeforeValidator(check)]


def _whole_number(value: Any) -> Any:
    """``-c key=5`` arrives as '5'; anything else is left to the strict int check (which refuses bools, 5.0)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _unset_to_none(value: Any) -> Any:
    """An optional setting given as '', 'none' or 'null' on the command line is not set."""
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        return None
    return value


def _list_reader(what: str) -> Callable[[Any], Any]:
    """A list from JSON (cdk.json), a JSON list string or a comma-separated string (``-c key=a,b``)."""

    def read(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise _wrong(f"is not a JSON list of {what}") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise _wrong(f"must be a list of {what}")
        return tuple(value)

    return read


def _no_repeats(same: Callable[[str], str] = str) -> Callable[[Any], Any]:
    def check(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        seen: set[str] = set()
        for index, value in enumerate(values or ()):
            if same(value) in seen:
                raise _wrong("is listed twice", index=index, value=value)
            seen.add(same(value))
        return values

    return check


def _list_of(item: Any, what: str, *, same: Callable[[str], str] = str) -> Any:
    return Annotated[tuple[item, ...], BeforeValidator(_list_reader(what)), AfterValidator(_no_repeats(same))]


WholeNumber = Annotated[int, Strict(), BeforeValidator(_whole_number)]
Flag = Annotated[bool, Strict(), BeforeValidator(_flag)]
VpcId = _pattern(r"vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})", "is not a VPC id such as 'vpc-0123456789abcdef0'")


def _aws_ids(prefix: str) -> Any:
    """A list of ids such as 'subnet-0123456789abcdef0' (8 or 17 hexadecimal digits)."""
    example = f"'{prefix}-0123456789abcdef0'"
    item = _pattern(rf"{prefix}-(?:[0-9a-f]{{8}}|[0-9a-f]{{17}})", f"is not an id such as {example}")
    return _list_of(item, f"ids such as {example}")


SubnetIds, SecurityGroupIds, RouteTableIds = _aws_ids("subnet"), _aws_ids("sg"), _aws_ids("rtb")
# Secrets Manager secret names: letters, digits and /_+=.@- (at most 512 characters).
SecretName = _pattern(
    r"[A-Za-z0-9/_+=.@-]{1,512}", "must be a Secrets Manager secret name (letters, digits and /_+=.@-)"
)
# A pragmatic address check: one @, no spaces, a dotted domain with a 2+ letter top-level label.
Email = _pattern(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
    "is not a valid e-mail address",
)
SourceTable = _pattern(
    "|".join(map(re.escape, SOURCE_TABLES)), f"is not a totesys source table (one of {', '.join(SOURCE_TABLES)})"
)
Host = _pattern(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", "is not a host name or address")
DatabaseName = _pattern(r"[^\s'\"]{1,63}", "is not a PostgreSQL database name")
Port = Annotated[WholeNumber, Field(ge=1, le=65535)]
# Commercial-partition regions only (the ARNs the stack forms are in the aws partition).
Region = _pattern(
    r"(?!cn-)[a-z]{2}-[a-z]+-\d", "must be a concrete AWS region of the commercial partition, such as 'eu-west-2'"
)
AccountId = _pattern(r"\d{12}", "must be a 12-digit AWS account id")
StackName = _pattern(
    rf"[A-Za-z][A-Za-z0-9-]{{0,{MAX_STACK_NAME_LENGTH - 1}}}",
    f"must start with a letter, contain only letters, digits and '-', and be at most {MAX_STACK_NAME_LENGTH} "
    f"characters long (the state machine is named '<stack_name>{STATE_MACHINE_NAME_SUFFIX}', "
    f"at most {STATE_MACHINE_NAME_MAX_LENGTH})",
)
SourceTables = _list_of(SourceTable, "source table names")
Emails = _list_of(Email, "e-mail addresses", same=str.lower)
# A QuickSight user or group in any namespace; its region is QuickSight's identity region, not the stack's.
_QUICKSIGHT_PRINCIPAL = re.compile(r"arn:aws:quicksight:[a-z]{2}-[a-z]+-\d:(\d{12}):(?:user|group)/[\w.@+=,/-]+")
# A complete secret ARN: QuickSight wants the suffix Secrets Manager adds to the name.
_SECRET_ARN = re.compile(r"arn:aws:secretsmanager:([a-z]{2}-[a-z]+-\d):(\d{12}):secret:(.+)-[A-Za-z0-9]{6}")
QuickSightPrincipalArn = _pattern(
    _QUICKSIGHT_PRINCIPAL.pattern,
    "is not a QuickSight user or group ARN such as 'arn:aws:quicksight:eu-west-2:123456789012:group/default/analysts'",
)
SecretArn = _pattern(
    _SECRET_ARN.pattern,
    "is not a complete Secrets Manager secret ARN (with the 6-character suffix), "
    "as `aws secretsmanager describe-secret` prints it",
)


def _schedule(value: Any) -> str:
    """An EventBridge schedule expression: ``rate(N unit)`` with the unit's right number, or a 6-field cron."""
    if isinstance(value, str) and (rate := re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", value)):
        count, unit = int(rate.group(1)), rate.group(2)
        if count < 1:
            raise _wrong(": a rate must be at least 1")
        if (count == 1) != (not unit.endswith("s")):
            raise _wrong(f": write 'rate(1 {unit.rstrip('s')})' for 1 and the plural otherwise")
        return value
    if isinstance(value, str) and (cron := re.fullmatch(r"cron\(([^()]+)\)", value)):
        fields = cron.group(1).split()
        if len(fields) != 6:
            raise _wrong(
                f": a cron expression has 6 fields (minutes hours day-of-month month day-of-week year), "
                f"found {len(fields)}"
            )
        if "?" not in (fields[2], fields[4]):
            raise _wrong(": one of day-of-month and day-of-week must be '?'")
        return value
    raise _wrong("is not an EventBridge schedule expression: use 'rate(N minutes|hours|days)' or 'cron(6 fields)'")


Schedule = Annotated[str, BeforeValidator(_schedule)]


def _all_when_empty(tables: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """No table named (None, [] or ''): the scheduled runs take every source table."""
    return tables or None


def _log_retention(days: int) -> int:
    if days not in LOG_RETENTION_DAYS:
        periods = ", ".join(str(d) for d in sorted(LOG_RETENTION_DAYS))
        raise _wrong(f"is not a CloudWatch Logs retention period (one of {periods})")
    return days


def _ca_bundle(value: Any) -> Path | None:
    """The CA certificates the functions verify both databases against (e.g. the RDS global bundle).

    It must be chosen: without it the functions trust only the runtime's public CAs, which sign no RDS
    certificate, so every table would fail against RDS. ``runtime`` says so on purpose (None here)."""
    if value is None or value == "":
        raise _rules(MISSING_CA_BUNDLE)
    if value == RUNTIME_CAS:
        return None
    path, shown = Path(str(value)), str(value)[:200]
    try:
        pem = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise _wrong("is not a readable PEM file", value=shown) from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise _wrong("holds no PEM certificate", value=shown)
    return path.resolve()


def _setting(default: Any, description: str, **constraints: Any) -> Any:
    """A context setting: its default, the sentence docs/deploy.md shows for it, and its constraints."""
    return Field(default=default, description=description, **constraints)


_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)


# --- The groups the constructs receive --------------------------------------------------------------------------


class DatabaseNetwork(BaseModel):
    """Where the databases are reachable from: the extract and load functions run in these subnets."""

    model_config = _FROZEN

    vpc_id: VpcId = Field(
        description="VPC of the databases; with it, `extract` and `load` run in `subnet_ids` with `security_group_ids`"
    )
    subnet_ids: SubnetIds = _setting(
        (), f"private subnets for `extract` and `load` (required with `vpc_id`, at most {MAX_SUBNETS})"
    )
    security_group_ids: SecurityGroupIds = _setting(
        (), f"security groups for `extract` and `load` (required with `vpc_id`, at most {MAX_SECURITY_GROUPS})"
    )

    @model_validator(mode="before")
    @classmethod
    def _needs_the_vpc(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and _unset(data.get("vpc_id")):
            raise _rules(
                "subnet_ids and security_group_ids are only used together with vpc_id: "
                "set vpc_id to the VPC of the databases, or leave all three unset"
            )
        return data

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, subnets: tuple[str, ...]) -> tuple[str, ...]:
        if not subnets:
            raise _rules("vpc_id is set, so subnet_ids must list the private subnets the functions run in")
        if len(subnets) > MAX_SUBNETS:
            raise _rules(f"subnet_ids lists {len(subnets)} subnets; Lambda accepts at most {MAX_SUBNETS}")
        return subnets

    @field_validator("security_group_ids")
    @classmethod
    def _groups(cls, groups: tuple[str, ...]) -> tuple[str, ...]:
        if not groups:
            raise _rules("vpc_id is set, so security_group_ids must list the security groups that the databases admit")
        if len(groups) > MAX_SECURITY_GROUPS:
            raise _rules(f"security_group_ids lists {len(groups)} groups; Lambda accepts at most {MAX_SECURITY_GROUPS}")
        return groups


class DatabaseLocation(BaseModel):
    """Host, port and database name that complete a secret holding only the login; None: the secret's own."""

    model_config = _FROZEN

    host: Annotated[Host | None, BeforeValidator(_unset_to_none)] = None
    port: Annotated[Port | None, BeforeValidator(_unset_to_none)] = None
    dbname: Annotated[DatabaseName | None, BeforeValidator(_unset_to_none)] = None


# The sentences of the two locations' settings (``totesys_host`` ...), which share one model.
_LOCATION_DESCRIPTIONS = {
    "totesys": {
        "host": "where totesys is, for a secret without `host` (an RDS-managed secret); the secret's value wins",
        "port": "its port, for a secret without `port` (then 5432)",
        "dbname": "its database, for a secret without `dbname`",
    },
    "warehouse": {
        "host": "where the warehouse is, for a secret without `host`; also QuickSight's host when given",
        "port": "its port, for a secret without `port` (then 5432); also QuickSight's port (else 5432)",
        "dbname": "its database, for a secret without `dbname`; also QuickSight's when given",
    },
}


class LakeRetention(BaseModel):
    """Lifecycle of the lake's objects; ``_state/`` (and processed ``_current/``) objects are never touched."""

    model_config = _FROZEN

    noncurrent_version_expiration_days: WholeNumber = _setting(
        90, "old versions of ingestion batch objects are deleted after this many days", ge=1
    )
    data_transition_days: WholeNumber = _setting(
        90,
        f"batch objects move to S3 Standard-IA after this many days (at least {MIN_TRANSITION_DAYS})",
        ge=MIN_TRANSITION_DAYS,
    )
    data_expiration_days: Annotated[WholeNumber | None, BeforeValidator(_unset_to_none)] = _setting(
        None,
        f"batch objects are deleted after this many days (at least {MIN_EXPIRATION_DAYS}); none = kept",
        ge=MIN_EXPIRATION_DAYS,
    )
    access_log_retention_days: WholeNumber = _setting(365, "server access logs are deleted after this many days", ge=1)

    @model_validator(mode="after")
    def _expires_after_the_transition(self) -> LakeRetention:
        if self.data_expiration_days is not None and self.data_expiration_days <= self.data_transition_days:
            raise _rules(
                f"data_expiration_days {self.data_expiration_days} must be later than "
                f"data_transition_days {self.data_transition_days}"
            )
        return self


class QuickSightSharing(BaseModel):
    """QuickSight over the warehouse (needs a subscription): who sees the dashboard, and the secret's full ARN."""

    model_config = _FROZEN

    principal_arn: QuickSightPrincipalArn = Field(
        description="QuickSight user or group to share the dashboard with "
        "(`arn:aws:quicksight:<identity region>:<account>:group/default/<name>`); with the next key, "
        "turns QuickSight on"
    )
    warehouse_secret_arn: SecretArn = Field(
        description="the complete ARN (with its 6-character suffix) of the `warehouse_secret_name` secret, "
        "which QuickSight signs in with"
    )

    @model_validator(mode="before")
    @classmethod
    def _both_or_neither(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(_unset(data.get(name)) for name in cls.model_fields):
            raise _rules(
                "quicksight_principal_arn and quicksight_warehouse_secret_arn turn QuickSight on together: "
                "give both, or neither"
            )
        return data


# Each group: its model, the prefix of its keys in the context, and whether it may be absent (all keys unset).
_GROUPS: dict[str, tuple[type[BaseModel], str, bool]] = {
    "network": (DatabaseNetwork, "", True),
    "retention": (LakeRetention, "", False),
    "quicksight": (QuickSightSharing, "quicksight_", True),
    "totesys_location": (DatabaseLocation, "totesys_", False),
    "warehouse_location": (DatabaseLocation, "warehouse_", False),
}


def _unset(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == ()


# --- The configuration -----------------------------------------------------------------------------------------


class PipelineConfig(BaseModel):
    """Every environment-specific value of the stack; built from the flat CDK context by :meth:`from_context`."""

    model_config = _FROZEN

    stack_name: StackName = _setting(
        "TotesysEtl",
        f"CloudFormation stack name (at most {MAX_STACK_NAME_LENGTH} characters); also prefixes the alarm and "
        "dashboard names and names the state machine `<stack_name>-pipeline`",
    )
    region: Region = _setting("eu-west-2", "region of the stack (a commercial-partition region)")
    account: Annotated[AccountId | None, BeforeValidator(_unset_to_none)] = _setting(
        None, "12-digit account id; none = the account of the deploying credentials"
    )
    totesys_secret_name: SecretName = _setting(
        "totesys/source", "Secrets Manager name of the totesys (source) credentials"
    )
    warehouse_secret_name: SecretName = _setting(
        "totesys/warehouse", "Secrets Manager name of the warehouse credentials"
    )
    schedule: Schedule = _setting(
        "rate(5 minutes)",
        r"when the pipeline starts: `rate(N minutes\|hours\|days)` or a 6-field `cron(...)`, in UTC",
    )
    # Nightly: the whole of every source table compared with the lake, per key range (docs/operations.md).
    reconcile_schedule: Schedule = _setting(
        "cron(30 2 * * ? *)",
        'when a reconciliation starts (execution input `{"reconcile": true}`, with `tables` if set): every source '
        "table compared with the lake per key range ([operations](operations.md#reconciliation))",
    )
    tables: Annotated[SourceTables | None, AfterValidator(_all_when_empty)] = _setting(
        None, 'source tables of the scheduled runs (execution input `{"tables": [...]}`); none = all eleven'
    )
    alert_emails: Emails = _setting(
        (), "e-mail addresses subscribed to the alert topic (each must confirm the SNS e-mail)"
    )
    log_retention_days: Annotated[WholeNumber, AfterValidator(_log_retention)] = _setting(
        30,
        "retention of the function and execution log groups (a CloudWatch Logs period: 1, 3, 5, 7, 14, 30, 60, 90, "
        "...)",
    )
    max_source_connections: WholeNumber = _setting(
        4,
        "the most extracts meant to hold connections to totesys at once (each holds two while it reads rows: see "
        "below); the synth warns when the extract Map runs more",
        ge=1,
        le=100,
    )
    # Off: a new account's Lambda concurrency quota (10) leaves nothing to reserve.
    reserve_extract_concurrency: Flag = _setting(
        False,
        "`true` reserves `max_source_connections` as `extract`'s concurrency; off, because a new account's quota "
        "(10 concurrent executions, 10 of which Lambda keeps unreserved) refuses any reservation",
    )
    extract_lookback_seconds: WholeNumber = _setting(
        900, "extract re-reads this far behind its watermark, for transactions that commit late", ge=0, le=86_400
    )
    extract_signal_max_age_seconds: WholeNumber = _setting(
        DEFAULT_SIGNAL_MAX_AGE_SECONDS,
        "an incremental extract skips a table whose change signal says it is unchanged, but scans it anyway once "
        "its last scan is this old (`EXTRACT_SIGNAL_MAX_AGE_SECONDS`; 0 = always scan; at most 86400): the longest "
        "a change the statistics never counted can wait "
        "([guarantees](guarantees.md#a-no-change-run-does-not-scan-the-source))",
        ge=0,
        le=86_400,
    )
    extract_partition_rows: WholeNumber = _setting(
        DEFAULT_PARTITION_ROWS,
        "a whole-table read (first extract, full refresh, repair) of a table estimated above this many rows is "
        "split into key ranges of about this size, read by parallel invocations and committed as one batch; `0` "
        "never splits ([operations](operations.md#tables-larger-than-one-lambda))",
        ge=0,
        le=1_000_000_000,
    )
    # At least one scheduled run's worth, at most 30 days.
    held_stuck_after_seconds: WholeNumber = _setting(
        DEFAULT_STUCK_AFTER_SECONDS,
        "a fact row held back for a missing dimension row longer than this is reported stuck and fires "
        "`HeldFactRowsStuck` (300 to 2592000)",
        ge=300,
        le=2_592_000,
    )
    tracing: Flag = _setting(
        True,
        "X-Ray tracing of the functions and the state machine; each function's trace carries the `table` and "
        '`stage` annotations (`annotation.table = "sales_order"` in the X-Ray console) and subsegments around its '
        "PostgreSQL and S3 work",
    )
    dashboard: Flag = _setting(
        False,
        "`true` creates the CloudWatch dashboard `<stack>-pipeline` (output `DashboardName`): $3 a month beyond an "
        "account's first three dashboards; the alarms, the saved queries and the consoles show the same without it "
        "([operations](operations.md#the-dashboard))",
    )
    network: DatabaseNetwork | None = None
    vpc_endpoints: Flag = _setting(
        False,
        "`true` creates the endpoints the functions in `subnet_ids` need when those subnets have no NAT: S3 "
        "(gateway), Secrets Manager and, with `tracing`, X-Ray (interface) ([below](#databases-in-private-subnets))",
    )
    route_table_ids: RouteTableIds = _setting(
        (), "the route tables of `subnet_ids`, for the S3 gateway endpoint (required with `vpc_endpoints`)"
    )
    retention: LakeRetention = LakeRetention()
    quicksight: QuickSightSharing | None = None
    database_ca_bundle: Annotated[Path | None, BeforeValidator(_ca_bundle)] = _setting(
        None,
        "required: a PEM file of the CA certificates that sign the databases' server certificates (for RDS, the "
        "[global bundle](https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)), shipped in the "
        f"function code and named by `PGSSLROOTCERT`; or `{RUNTIME_CAS}`: the runtime's trusted public CAs, "
        "which sign no RDS certificate",
    )
    totesys_location: DatabaseLocation = DatabaseLocation()
    warehouse_location: DatabaseLocation = DatabaseLocation()

    @property
    def schedule_input(self) -> dict[str, Any]:
        """The execution input of the scheduled runs: ``{}`` runs every source table."""
        return {} if self.tables is None else {"tables": list(self.tables)}

    @property
    def reconcile_input(self) -> dict[str, Any]:
        """The execution input of the scheduled reconciliations: the same tables, compared whole."""
        return {**self.schedule_input, "reconcile": True}

    @model_validator(mode="before")
    @classmethod
    def _group(cls, data: Any) -> Any:
        """The flat context's keys of each group into that group (None: a group that may be absent, and is)."""
        if not isinstance(data, Mapping):
            return data
        flat = dict(data)
        for group, (model, prefix, optional) in _GROUPS.items():
            part = {name: flat.pop(prefix + name) for name in model.model_fields if prefix + name in flat}
            if part:
                flat[group] = None if optional and all(_unset(value) for value in part.values()) else part
        return flat

    @model_validator(mode="after")
    def _rules_across_groups(self) -> PipelineConfig:
        """The rules that join groups: the endpoints need the network; QuickSight, this stack's secret and VPC."""
        broken: list[str] = []
        if not self.vpc_endpoints and self.route_table_ids:
            broken.append("route_table_ids is only used with vpc_endpoints=true")
        if self.vpc_endpoints and self.network is None:
            broken.append("vpc_endpoints=true needs vpc_id, subnet_ids and security_group_ids: the endpoints go there")
        if self.vpc_endpoints and not self.route_table_ids:
            broken.append("vpc_endpoints=true needs route_table_ids: the route tables of subnet_ids (the S3 gateway)")
        if self.quicksight is not None:
            broken.extend(self._quicksight_problems(self.quicksight))
        if broken:
            raise _rules(*broken)
        return self

    def _quicksight_problems(self, sharing: QuickSightSharing) -> Iterator[str]:
        principal = _QUICKSIGHT_PRINCIPAL.fullmatch(sharing.principal_arn)
        if principal is not None and self.account is not None and principal.group(1) != self.account:
            yield f"quicksight_principal_arn {sharing.principal_arn!r} is not in account {self.account}"
        secret = _SECRET_ARN.fullmatch(sharing.warehouse_secret_arn)
        if secret is not None:
            region, account, name = secret.groups()
            if name != self.warehouse_secret_name or region != self.region or self.account not in (None, account):
                yield (
                    f"quicksight_warehouse_secret_arn {sharing.warehouse_secret_arn!r} is not the warehouse secret "
                    f"of this stack ('{self.warehouse_secret_name}' in {self.region}"
                    f"{f' of account {self.account}' if self.account else ''})"
                )
        if self.network is not None and len(self.network.subnet_ids) < MIN_QUICKSIGHT_SUBNETS:
            yield (
                f"QuickSight reaches the warehouse through a VPC connection, which needs subnet_ids in at least "
                f"{MIN_QUICKSIGHT_SUBNETS} availability zones; {len(self.network.subnet_ids)} given"
            )

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | Callable[[str], Any]) -> PipelineConfig:
        """Build from the whole context (``app.node.get_all_context()``) or a getter of one key; raise ConfigError.

        With the whole context, an unknown key of our own namespace is refused (a misspelt setting would
        otherwise be ignored in silence); a getter can only be asked for the keys we know.
        """
        if isinstance(context, Mapping):
            given = {key: value for key, value in context.items() if _ours(key)}
        else:
            given = {key: context(key) for key in CONTEXT_KEYS}
        problems = [_unknown_key(key) for key in given if key not in CONTEXT_KEYS]
        try:
            config = cls.model_validate(
                {key: value for key, value in given.items() if key in CONTEXT_KEYS and value is not None}
            )
        except ValidationError as error:
            problems.extend(_lines(error))
        if problems:
            raise ConfigError("Invalid CDK context:\n  - " + "\n  - ".join(problems))
        return config


# --- The flat context: its keys, defaults and documentation, all read from the models above ---------------------


def _context_fields() -> Iterator[tuple[str, FieldInfo]]:
    """Every context key with its field, in the order of the model (cdk.json's and docs/deploy.md's order)."""
    for name, field in PipelineConfig.model_fields.items():
        if name not in _GROUPS:
            yield name, field
            continue
        model, prefix, _ = _GROUPS[name]
        for member, member_field in model.model_fields.items():
            if model is DatabaseLocation:
                member_field = Field(default=None, description=_LOCATION_DESCRIPTIONS[prefix[:-1]][member])
            yield prefix + member, member_field


def _json_default(field: FieldInfo) -> Any:
    """A field's default as cdk.json writes it (a list for a tuple); a required member of a group: None."""
    if field.is_required():
        return None
    default = field.default
    if isinstance(default, tuple):
        return list(default)
    return default


CONTEXT_KEYS: tuple[str, ...] = tuple(key for key, _ in _context_fields())
DEFAULTS: dict[str, Any] = {key: _json_default(field) for key, field in _context_fields()}
_OUR_KEY = re.compile(r"[a-z][a-z0-9_]*")


def _ours(key: str) -> bool:
    """A key of this app: snake_case (the CDK's own keys carry ':', '@' or '-'), or one of ours with '-' for '_'."""
    return bool(_OUR_KEY.fullmatch(key)) or key.replace("-", "_") in CONTEXT_KEYS


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), CONTEXT_KEYS, n=1)
    hint = f": did you mean {close[0]}?" if close else f" (the settings are listed in {DOCUMENTED_IN})"
    return f"{key} is not a setting of this stack{hint}"


def _lines(error: ValidationError) -> list[str]:
    """Pydantic's errors as the synth's lines: the context key, the value, what is expected."""
    lines: list[str] = []
    for problem in error.errors():
        key, indexes = _key_of(problem["loc"])
        kind, context = problem["type"], problem.get("ctx", {})
        if "index" in context:
            indexes += f"[{context['index']}]"
        value = context.get("value", problem.get("input"))
        if kind == "context_rules":
            lines.extend(context["lines"])
        elif kind == "context_value":
            separator = "" if problem["msg"].startswith(":") else " "
            lines.append(f"{key}{indexes} {value!r}{separator}{problem['msg']}")
        else:
            expected = (
                _BUILTIN_EXPECTATIONS[kind].format(**context) if kind in _BUILTIN_EXPECTATIONS else problem["msg"]
            )
            lines.append(f"{key}{indexes} {value!r} {expected}")
    return lines


_BUILTIN_EXPECTATIONS = {
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _key_of(loc: tuple[str | int, ...]) -> tuple[str, str]:
    """The context key and list index (``subnet_ids``, ``[0]``) of an error's location in the grouped model."""
    names = [part for part in loc if isinstance(part, str)]
    indexes = "".join(f"[{part}]" for part in loc if isinstance(part, int))
    if not names:
        return "", indexes
    if names[0] in _GROUPS and len(names) > 1:
        return _GROUPS[names[0]][1] + names[1], indexes
    return names[0], indexes


DOCUMENTED_IN = "docs/deploy.md"
_TABLE_HEADER = "| key | default | meaning |\n|---|---|---|\n"


def context_table() -> str:
    """docs/deploy.md's table of the context settings, from the models: each setting is documented once."""
    rows = []
    for key, field in _context_fields():
        default = _json_default(field)
        if isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        elif default is None or default == []:
            shown = "none"
        else:
            shown = f"`{default}`"
        rows.append(f"| `{key}` | {shown} | {field.description} |\n")
    return _TABLE_HEADER + "".join(rows)


def documented_table(guide: str) -> str:
    """The table as docs/deploy.md has it: from its header to the first line that is not a row."""
    start = guide.index(_TABLE_HEADER)
    end = start + len(_TABLE_HEADER)
    while end < len(guide) and guide.startswith("| ", end):
        end = guide.index("\n", end) + 1
    return guide[start:end]


def main(argv: list[str]) -> int:
    """``python -m cdk.config [docs/deploy.md]``: print the table, or write it into the guide in place."""
    if not argv:
        sys.stdout.write(context_table())
        return 0
    guide = Path(argv[0])
    text = guide.read_text(encoding="utf-8")
    guide.write_text(text.replace(documented_table(text), context_table()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Typed, validated configuration of the CDK app, read once from the CDK context.

Only ``app.py`` calls :meth:`PipelineConfig.from_context`; every construct receives plain typed values.
Context values arrive as JSON types from ``cdk.json`` and as strings from ``cdk synth -c key=value``;
both forms are accepted. Every problem is collected and reported at once, before anything is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

# Commercial-partition regions only (the ARNs the stack forms are in the aws partition).
_REGION = re.compile(r"^(?!cn-)[a-z]{2}-[a-z]+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")
# Secrets Manager secret names: letters, digits and /_+=.@- (at most 512 characters).
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
# A pragmatic address check: one @, no spaces, a dotted domain with a 2+ letter top-level label.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
)
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\(([^()]+)\)$")
# CloudFormation allows 128 characters, but the state machine is named '<stack_name>-pipeline' (at most 80).
MAX_STACK_NAME_LENGTH = STATE_MACHINE_NAME_MAX_LENGTH - len(STATE_MACHINE_NAME_SUFFIX)
_STACK_NAME = re.compile(rf"^[A-Za-z][A-Za-z0-9-]{{0,{MAX_STACK_NAME_LENGTH - 1}}}$")
_VPC_ID = re.compile(r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET_ID = re.compile(r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_ROUTE_TABLE_ID = re.compile(r"^rtb-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SECURITY_GROUP_ID = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
# A QuickSight user or group in any namespace; its region is QuickSight's identity region, not the stack's.
_QUICKSIGHT_PRINCIPAL = re.compile(r"^arn:aws:quicksight:[a-z]{2}-[a-z]+-\d:(\d{12}):(?:user|group)/[\w.@+=,/-]+$")
# A complete secret ARN: QuickSight wants the suffix Secrets Manager adds to the name.
_SECRET_ARN = re.compile(r"^arn:aws:secretsmanager:([a-z]{2}-[a-z]+-\d):(\d{12}):secret:(.+)-[A-Za-z0-9]{6}$")
# A QuickSight VPC connection needs subnets in at least two availability zones.
MIN_QUICKSIGHT_SUBNETS = 2

DEFAULTS: dict[str, Any] = {
    "stack_name": "TotesysEtl",
    "region": "eu-west-2",
    "account": None,
    "totesys_secret_name": "totesys/source",
    "warehouse_secret_name": "totesys/warehouse",
    "schedule": "rate(5 minutes)",
    # Nightly: the whole of every source table compared with the lake, per key range (docs/operations.md).
    "reconcile_schedule": "cron(30 2 * * ? *)",
    "tables": None,
    "alert_emails": [],
    "log_retention_days": 30,
    "max_source_connections": 4,
    # Off: a new account's Lambda concurrency quota (10) leaves nothing to reserve (docs/deploy.md).
    "reserve_extract_concurrency": False,
    "extract_lookback_seconds": 900,
    # A table whose change signal says "unchanged" is still scanned when its last scan is this old; 0: always.
    "extract_signal_max_age_seconds": DEFAULT_SIGNAL_MAX_AGE_SECONDS,
    # A whole-table read estimated above this many rows is split into key ranges of about this size (0: never).
    "extract_partition_rows": DEFAULT_PARTITION_ROWS,
    "held_stuck_after_seconds": DEFAULT_STUCK_AFTER_SECONDS,
    "tracing": True,
    "dashboard": False,  # the CloudWatch dashboard, $3 a month beyond an account's first three (docs/cost.md)
    "vpc_id": None,
    "subnet_ids": [],
    "security_group_ids": [],
    # With vpc_id, for private subnets without NAT: endpoints for S3 (on these route tables), Secrets Manager, X-Ray.
    "vpc_endpoints": False,
    "route_table_ids": [],
    "noncurrent_version_expiration_days": 90,
    "data_transition_days": 90,
    "data_expiration_days": None,
    "access_log_retention_days": 365,
    "quicksight_principal_arn": None,
    "quicksight_warehouse_secret_arn": None,
    "database_ca_bundle": None,
    # Where each database is, for a secret that holds only the login (the one RDS manages for a master user).
    "totesys_host": None,
    "totesys_port": None,
    "totesys_dbname": None,
    "warehouse_host": None,
    "warehouse_port": None,
    "warehouse_dbname": None,
}


class ConfigError(ValueError):
    """The CDK context does not describe a deployable pipeline; the message lists every problem."""


@dataclass(frozen=True, kw_only=True)
class DatabaseNetwork:
    """Where the databases are reachable from: the extract and load functions run in these subnets."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class DatabaseLocation:
    """Host, port and database name that complete a secret holding only the login; None: the secret's own."""

    host: str | None = None
    port: int | None = None
    dbname: str | None = None


@dataclass(frozen=True, kw_only=True)
class LakeRetention:
    """Lifecycle of the lake's objects; ``_state/`` (and processed ``_current/``) objects are never touched."""

    noncurrent_version_expiration_days: int
    data_transition_days: int
    data_expiration_days: int | None
    access_log_retention_days: int


@dataclass(frozen=True, kw_only=True)
class QuickSightSharing:
    """QuickSight over the warehouse (needs a subscription): who sees the dashboard, and the secret's full ARN."""

    principal_arn: str
    warehouse_secret_arn: str


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    stack_name: str
    region: str
    account: str | None
    totesys_secret_name: str
    warehouse_secret_name: str
    schedule: str
    reconcile_schedule: str
    tables: tuple[str, ...] | None
    alert_emails: tuple[str, ...]
    log_retention_days: int
    max_source_connections: int
    reserve_extract_concurrency: bool
    extract_lookback_seconds: int
    extract_signal_max_age_seconds: int
    extract_partition_rows: int
    held_stuck_after_seconds: int
    tracing: bool
    dashboard: bool = False
    network: DatabaseNetwork | None
    retention: LakeRetention
    route_table_ids: tuple[str, ...] = ()  # non-empty: the VPC endpoints are created (context vpc_endpoints)
    quicksight: QuickSightSharing | None = None
    database_ca_bundle: Path | None = None
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

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> PipelineConfig:
        """Build from a context getter such as ``app.node.try_get_context``; raise ConfigError if invalid."""
        errors: list[str] = []

        def value(key: str) -> Any:
            found = get(key)
            return DEFAULTS[key] if found is None else found

        stack_name = _text(
            value("stack_name"),
            "stack_name",
            _STACK_NAME,
            f"must start with a letter, contain only letters, digits and '-', and be at most "
            f"{MAX_STACK_NAME_LENGTH} characters long (the state machine is named '<stack_name>"
            f"{STATE_MACHINE_NAME_SUFFIX}', at most {STATE_MACHINE_NAME_MAX_LENGTH})",
            errors,
        )
        region = _text(
            value("region"),
            "region",
            _REGION,
            "must be a concrete AWS region of the commercial partition, such as 'eu-west-2'",
            errors,
        )
        account = value("account")
        if account is not None:
            account = _text(account, "account", _ACCOUNT, "must be a 12-digit AWS account id", errors)
        secrets = {
            key: _text(
                value(key),
                key,
                _SECRET_NAME,
                "must be a Secrets Manager secret name (letters, digits and /_+=.@-)",
                errors,
            )
            for key in ("totesys_secret_name", "warehouse_secret_name")
        }
        schedule = _schedule(value("schedule"), errors)
        reconcile_schedule = _schedule(value("reconcile_schedule"), errors, "reconcile_schedule")
        tables = _tables(value("tables"), errors)
        alert_emails = _emails(value("alert_emails"), errors)
        retention = _integer(value("log_retention_days"), "log_retention_days", errors)
        if retention is not None and retention not in LOG_RETENTION_DAYS:
            errors.append(
                f"log_retention_days {retention} is not a CloudWatch Logs retention period "
                f"(one of {', '.join(str(d) for d in sorted(LOG_RETENTION_DAYS))})"
            )
        max_source_connections = _integer(
            value("max_source_connections"), "max_source_connections", errors, minimum=1, maximum=100
        )
        lookback = _integer(
            value("extract_lookback_seconds"), "extract_lookback_seconds", errors, minimum=0, maximum=86_400
        )
        max_age_key = "extract_signal_max_age_seconds"
        signal_max_age = _integer(value(max_age_key), max_age_key, errors, minimum=0, maximum=86_400)
        partition_rows = _integer(
            value("extract_partition_rows"), "extract_partition_rows", errors, minimum=0, maximum=1_000_000_000
        )
        # At least one scheduled run's worth, at most 30 days: a held fact row is reported stuck after this.
        stuck_after = _integer(
            value("held_stuck_after_seconds"), "held_stuck_after_seconds", errors, minimum=300, maximum=2_592_000
        )
        tracing = _boolean(value("tracing"), "tracing", errors)
        dashboard = _boolean(value("dashboard"), "dashboard", errors)
        reserve = _boolean(value("reserve_extract_concurrency"), "reserve_extract_concurrency", errors)
        network = _network(value("vpc_id"), value("subnet_ids"), value("security_group_ids"), errors)
        route_tables = _endpoints(value("vpc_endpoints"), value("route_table_ids"), value("vpc_id"), errors)
        lake = _lake_retention(value, errors)
        quicksight = _quicksight(
            value("quicksight_principal_arn"),
            value("quicksight_warehouse_secret_arn"),
            region=region,
            account=account,
            warehouse_secret_name=secrets["warehouse_secret_name"],
            network=network,
            errors=errors,
        )
        ca_bundle = _ca_bundle(value("database_ca_bundle"), errors)
        locations = {f"{name}_location": _location(value, name, errors) for name in ("totesys", "warehouse")}

        if errors:
            raise ConfigError("Invalid CDK context:\n  - " + "\n  - ".join(errors))
        return cls(
            stack_name=stack_name,
            region=region,
            account=account,
            schedule=schedule,
            reconcile_schedule=reconcile_schedule,
            tables=tables,
            alert_emails=alert_emails,
            log_retention_days=retention,
            max_source_connections=max_source_connections,
            reserve_extract_concurrency=reserve,
            extract_lookback_seconds=lookback,
            extract_signal_max_age_seconds=signal_max_age,
            extract_partition_rows=partition_rows,
            held_stuck_after_seconds=stuck_after,
            tracing=tracing,
            dashboard=dashboard,
            network=network,
            route_table_ids=route_tables,
            retention=lake,
            quicksight=quicksight,
            database_ca_bundle=ca_bundle,
            **locations,
            **secrets,
        )


def _text(raw: Any, key: str, pattern: re.Pattern[str], expectation: str, errors: list[str]) -> str:
    if not isinstance(raw, str) or not pattern.match(raw):
        errors.append(f"{key} {raw!r} {expectation}")
        return ""
    return raw


def _integer(
    raw: Any, key: str, errors: list[str], *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    if isinstance(raw, bool):
        number = None
    elif isinstance(raw, int):
        number = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        number = int(raw)
    else:
        number = None
    if number is None:
        errors.append(f"{key} {raw!r} must be a whole number")
    elif minimum is not None and number < minimum:
        errors.append(f"{key} {raw!r} must be at least {minimum}")
        number = None
    elif maximum is not None and number > maximum:
        errors.append(f"{key} {raw!r} must be at most {maximum}")
        number = None
    return number


def _optional_integer(raw: Any, key: str, errors: list[str], *, minimum: int) -> int | None:
    """None, '' and 'none' mean "not set"; anything else must be a whole number >= minimum."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
        return None
    return _integer(raw, key, errors, minimum=minimum)


def _boolean(raw: Any, key: str, errors: list[str]) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    errors.append(f"{key} {raw!r} must be true or false")
    return False


def _string_list(raw: Any, key: str, errors: list[str], *, what: str) -> list[Any] | None:
    """A list from JSON (cdk.json), a JSON list string or a comma-separated string (``-c key=a,b``)."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                errors.append(f"{key} {raw!r} is not a JSON list of {what}")
                return None
        else:
            raw = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        errors.append(f"{key} {raw!r} must be a list of {what}")
        return None
    return list(raw)


def _schedule(raw: Any, errors: list[str], key: str = "schedule") -> str:
    problem = "is not an EventBridge schedule expression: use 'rate(N minutes|hours|days)' or 'cron(6 fields)'"
    if not isinstance(raw, str):
        errors.append(f"{key} {raw!r} {problem}")
        return ""
    rate = _RATE.match(raw)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2)
        if count < 1:
            errors.append(f"{key} {raw!r}: a rate must be at least 1")
        elif (count == 1) != (not unit.endswith("s")):
            errors.append(f"{key} {raw!r}: write 'rate(1 {unit.rstrip('s')})' for 1 and the plural otherwise")
        return raw
    cron = _CRON.match(raw)
    if cron:
        fields = cron.group(1).split()
        if len(fields) != 6:
            errors.append(
                f"{key} {raw!r}: a cron expression has 6 fields "
                f"(minutes hours day-of-month month day-of-week year), found {len(fields)}"
            )
        elif "?" not in (fields[2], fields[4]):
            errors.append(f"{key} {raw!r}: one of day-of-month and day-of-week must be '?'")
        return raw
    errors.append(f"{key} {raw!r} {problem}")
    return ""


def _tables(raw: Any, errors: list[str]) -> tuple[str, ...] | None:
    """The source tables of the scheduled runs; None (or an empty list) means every source table."""
    if raw is None:
        return None
    names = _string_list(raw, "tables", errors, what="source table names")
    if names is None:
        return None
    tables: list[str] = []
    for index, name in enumerate(names):
        if name not in SOURCE_TABLES:
            errors.append(f"tables[{index}] {name!r} is not a totesys source table (one of {', '.join(SOURCE_TABLES)})")
        elif name in tables:
            errors.append(f"tables[{index}] {name!r} is listed twice")
        else:
            tables.append(name)
    return tuple(tables) or None


def _emails(raw: Any, errors: list[str]) -> tuple[str, ...]:
    addresses = _string_list(raw, "alert_emails", errors, what="e-mail addresses")
    if addresses is None:
        return ()
    emails: list[str] = []
    for index, address in enumerate(addresses):
        if not isinstance(address, str) or not _EMAIL.match(address):
            errors.append(f"alert_emails[{index}] {address!r} is not a valid e-mail address")
        elif address.lower() in (e.lower() for e in emails):
            errors.append(f"alert_emails[{index}] {address!r} is listed twice")
        else:
            emails.append(address)
    return tuple(emails)


def _ids(raw: Any, key: str, pattern: re.Pattern[str], example: str, errors: list[str]) -> tuple[str, ...]:
    values = _string_list(raw, key, errors, what=f"ids such as '{example}'")
    if values is None:
        return ()
    ids: list[str] = []
    for index, value in enumerate(values):
        if not isinstance(value, str) or not pattern.match(value):
            errors.append(f"{key}[{index}] {value!r} is not an id such as '{example}'")
        elif value in ids:
            errors.append(f"{key}[{index}] {value!r} is listed twice")
        else:
            ids.append(value)
    return tuple(ids)


def _network(vpc_id: Any, subnet_ids: Any, security_group_ids: Any, errors: list[str]) -> DatabaseNetwork | None:
    """All three of vpc_id, subnet_ids and security_group_ids, or none of them."""
    before = len(errors)
    subnets = _ids(subnet_ids, "subnet_ids", _SUBNET_ID, "subnet-0123456789abcdef0", errors)
    groups = _ids(security_group_ids, "security_group_ids", _SECURITY_GROUP_ID, "sg-0123456789abcdef0", errors)
    if vpc_id is None or vpc_id == "":
        if subnets or groups:
            errors.append(
                "subnet_ids and security_group_ids are only used together with vpc_id: "
                "set vpc_id to the VPC of the databases, or leave all three unset"
            )
        return None
    vpc = _text(vpc_id, "vpc_id", _VPC_ID, "is not a VPC id such as 'vpc-0123456789abcdef0'", errors)
    if not subnets:
        errors.append("vpc_id is set, so subnet_ids must list the private subnets the functions run in")
    elif len(subnets) > MAX_SUBNETS:
        errors.append(f"subnet_ids lists {len(subnets)} subnets; Lambda accepts at most {MAX_SUBNETS}")
    if not groups:
        errors.append("vpc_id is set, so security_group_ids must list the security groups that the databases admit")
    elif len(groups) > MAX_SECURITY_GROUPS:
        errors.append(f"security_group_ids lists {len(groups)} groups; Lambda accepts at most {MAX_SECURITY_GROUPS}")
    if len(errors) > before:
        return None
    return DatabaseNetwork(vpc_id=vpc, subnet_ids=subnets, security_group_ids=groups)


RUNTIME_CAS = "runtime"  # database_ca_bundle: trust the Lambda runtime's public CAs (no bundle shipped)
MISSING_CA_BUNDLE = (
    "database_ca_bundle is not set, and the functions verify the databases' certificates (sslmode verify-full): "
    "add -c database_ca_bundle=global-bundle.pem (RDS: the global bundle, see docs/deploy.md) "
    f"or -c database_ca_bundle={RUNTIME_CAS} (certificates signed by a public CA)"
)


def _endpoints(wanted: Any, route_table_ids: Any, vpc_id: Any, errors: list[str]) -> tuple[str, ...]:
    """The route tables of the S3 gateway endpoint when vpc_endpoints is on (it needs vpc_id and them)."""
    route_tables = _ids(route_table_ids, "route_table_ids", _ROUTE_TABLE_ID, "rtb-0123456789abcdef0", errors)
    if not _boolean(wanted, "vpc_endpoints", errors):
        if route_tables:
            errors.append("route_table_ids is only used with vpc_endpoints=true")
        return ()
    if vpc_id in (None, ""):
        errors.append("vpc_endpoints=true needs vpc_id, subnet_ids and security_group_ids: the endpoints go there")
    if not route_tables:
        errors.append("vpc_endpoints=true needs route_table_ids: the route tables of subnet_ids (the S3 gateway)")
    return route_tables


def _ca_bundle(raw: Any, errors: list[str]) -> Path | None:
    """The CA certificates the functions verify both databases against (e.g. the RDS global bundle).

    It must be chosen: without it the functions trust only the runtime's public CAs, which sign no RDS
    certificate, so every table would fail against RDS. ``runtime`` says so on purpose (None here)."""
    if raw is None or raw == "":
        errors.append(MISSING_CA_BUNDLE)
        return None
    if raw == RUNTIME_CAS:
        return None
    path = Path(str(raw))
    try:
        pem = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        errors.append(f"database_ca_bundle {str(raw)[:200]!r} is not a readable PEM file")
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        errors.append(f"database_ca_bundle {str(raw)[:200]!r} holds no PEM certificate")
        return None
    return path.resolve()


_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$")
_DBNAME = re.compile(r"^[^\s'\"]{1,63}$")


def _location(value: Callable[[str], Any], database: str, errors: list[str]) -> DatabaseLocation:
    """``<database>_host``, ``_port``, ``_dbname``: each optional; the secret's own value wins where it has one."""
    host, port, dbname = (value(f"{database}_{key}") for key in ("host", "port", "dbname"))
    if host not in (None, ""):
        host = _text(host, f"{database}_host", _HOST, "is not a host name or address", errors) or None
    if dbname not in (None, ""):
        dbname = _text(dbname, f"{database}_dbname", _DBNAME, "is not a PostgreSQL database name", errors) or None
    number = _optional_integer(port, f"{database}_port", errors, minimum=1)
    if number is not None and number > 65535:
        errors.append(f"{database}_port {port!r} must be at most 65535")
        number = None
    return DatabaseLocation(host=host or None, port=number, dbname=dbname or None)


def _lake_retention(value: Callable[[str], Any], errors: list[str]) -> LakeRetention:
    noncurrent = _integer(
        value("noncurrent_version_expiration_days"), "noncurrent_version_expiration_days", errors, minimum=1
    )
    transition = _integer(value("data_transition_days"), "data_transition_days", errors, minimum=MIN_TRANSITION_DAYS)
    expiration = _optional_integer(
        value("data_expiration_days"), "data_expiration_days", errors, minimum=MIN_EXPIRATION_DAYS
    )
    if expiration is not None and transition is not None and expiration <= transition:
        errors.append(f"data_expiration_days {expiration} must be later than data_transition_days {transition}")
    access_logs = _integer(value("access_log_retention_days"), "access_log_retention_days", errors, minimum=1)
    return LakeRetention(
        noncurrent_version_expiration_days=noncurrent or 0,
        data_transition_days=transition or 0,
        data_expiration_days=expiration,
        access_log_retention_days=access_logs or 0,
    )


def _quicksight(
    principal: Any,
    secret_arn: Any,
    *,
    region: str,
    account: str | None,
    warehouse_secret_name: str,
    network: DatabaseNetwork | None,
    errors: list[str],
) -> QuickSightSharing | None:
    """Both QuickSight keys, or neither (QuickSight off); the secret must be the warehouse secret of this stack."""
    if principal in (None, "") and secret_arn in (None, ""):
        return None
    before = len(errors)
    if principal in (None, "") or secret_arn in (None, ""):
        errors.append(
            "quicksight_principal_arn and quicksight_warehouse_secret_arn turn QuickSight on together: "
            "give both, or neither"
        )
        return None
    principal_match = _QUICKSIGHT_PRINCIPAL.match(principal) if isinstance(principal, str) else None
    if principal_match is None:
        errors.append(
            f"quicksight_principal_arn {principal!r} is not a QuickSight user or group ARN such as "
            "'arn:aws:quicksight:eu-west-2:123456789012:group/default/analysts'"
        )
    elif account is not None and principal_match.group(1) != account:
        errors.append(f"quicksight_principal_arn {principal!r} is not in account {account}")
    secret_match = _SECRET_ARN.match(secret_arn) if isinstance(secret_arn, str) else None
    if secret_match is None:
        errors.append(
            f"quicksight_warehouse_secret_arn {secret_arn!r} is not a complete Secrets Manager secret ARN "
            "(with the 6-character suffix), as `aws secretsmanager describe-secret` prints it"
        )
    else:
        secret_region, secret_account, name = secret_match.groups()
        if name != warehouse_secret_name or secret_region != region or account not in (None, secret_account):
            errors.append(
                f"quicksight_warehouse_secret_arn {secret_arn!r} is not the warehouse secret of this stack "
                f"('{warehouse_secret_name}' in {region}{f' of account {account}' if account else ''})"
            )
    if network is not None and len(network.subnet_ids) < MIN_QUICKSIGHT_SUBNETS:
        errors.append(
            f"QuickSight reaches the warehouse through a VPC connection, which needs subnet_ids in at least "
            f"{MIN_QUICKSIGHT_SUBNETS} availability zones; {len(network.subnet_ids)} given"
        )
    if len(errors) > before:
        return None
    return QuickSightSharing(principal_arn=principal, warehouse_secret_arn=secret_arn)

"""Typed, validated configuration of the CDK app, read once from the CDK context.

Only ``app.py`` calls :meth:`PipelineConfig.from_context`; every construct receives plain typed values.
Context values arrive as JSON types from ``cdk.json`` and as strings from ``cdk synth -c key=value``;
both forms are accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Retention periods that CloudWatch Logs accepts (days).
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)

# Commercial-partition regions only: the managed layers are published from other accounts elsewhere.
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
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")

DEFAULTS: dict[str, Any] = {
    "stack_name": "TotesysEtl",
    "region": "eu-west-2",
    "account": None,
    "totesys_secret_name": "totesys/source",
    "warehouse_secret_name": "totesys/warehouse",
    "schedule": "rate(5 minutes)",
    "alert_emails": [],
    "log_retention_days": 30,
    "powertools_layer_version": 27,
    "pandas_layer_version": 11,
}


class ConfigError(ValueError):
    """The CDK context does not describe a deployable pipeline; the message lists every problem."""


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    stack_name: str
    region: str
    account: str | None
    totesys_secret_name: str
    warehouse_secret_name: str
    schedule: str
    alert_emails: tuple[str, ...]
    log_retention_days: int
    powertools_layer_version: int
    pandas_layer_version: int

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
            "must start with a letter and contain only letters, digits and '-'",
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
        alert_emails = _emails(value("alert_emails"), errors)
        retention = _integer(value("log_retention_days"), "log_retention_days", errors)
        if retention is not None and retention not in LOG_RETENTION_DAYS:
            errors.append(
                f"log_retention_days {retention} is not a CloudWatch Logs retention period "
                f"(one of {', '.join(str(d) for d in sorted(LOG_RETENTION_DAYS))})"
            )
        layer_versions = {
            key: _integer(value(key), key, errors, minimum=1)
            for key in ("powertools_layer_version", "pandas_layer_version")
        }

        if errors:
            raise ConfigError("Invalid CDK context:\n  - " + "\n  - ".join(errors))
        return cls(
            stack_name=stack_name,
            region=region,
            account=account,
            schedule=schedule,
            alert_emails=alert_emails,
            log_retention_days=retention,
            **secrets,
            **layer_versions,
        )


def _text(raw: Any, key: str, pattern: re.Pattern[str], expectation: str, errors: list[str]) -> str:
    if not isinstance(raw, str) or not pattern.match(raw):
        errors.append(f"{key} {raw!r} {expectation}")
        return ""
    return raw


def _integer(raw: Any, key: str, errors: list[str], *, minimum: int | None = None) -> int | None:
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
    return number


def _schedule(raw: Any, errors: list[str]) -> str:
    problem = "is not an EventBridge schedule expression: use 'rate(N minutes|hours|days)' or 'cron(6 fields)'"
    if not isinstance(raw, str):
        errors.append(f"schedule {raw!r} {problem}")
        return ""
    rate = _RATE.match(raw)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2)
        if count < 1:
            errors.append(f"schedule {raw!r}: a rate must be at least 1")
        elif (count == 1) != (not unit.endswith("s")):
            errors.append(f"schedule {raw!r}: write 'rate(1 {unit.rstrip('s')})' for 1 and the plural otherwise")
        return raw
    cron = _CRON.match(raw)
    if cron:
        fields = cron.group(1).split()
        if len(fields) != 6:
            errors.append(
                f"schedule {raw!r}: a cron expression has 6 fields "
                f"(minutes hours day-of-month month day-of-week year), found {len(fields)}"
            )
        elif "?" not in (fields[2], fields[4]):
            errors.append(f"schedule {raw!r}: one of day-of-month and day-of-week must be '?'")
        return raw
    errors.append(f"schedule {raw!r} {problem}")
    return ""


def _emails(raw: Any, errors: list[str]) -> tuple[str, ...]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                errors.append(f"alert_emails {raw!r} is not a JSON list of e-mail addresses")
                return ()
        else:
            raw = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        errors.append(f"alert_emails {raw!r} must be a list of e-mail addresses")
        return ()
    emails: list[str] = []
    for index, address in enumerate(raw):
        if not isinstance(address, str) or not _EMAIL.match(address):
            errors.append(f"alert_emails[{index}] {address!r} is not a valid e-mail address")
        elif address.lower() in (e.lower() for e in emails):
            errors.append(f"alert_emails[{index}] {address!r} is listed twice")
        else:
            emails.append(address)
    return tuple(emails)

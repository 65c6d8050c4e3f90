"""Each function's settings: the environment variables it reads, with their types, bounds and defaults, in one model.

A variable's name is spelled once, here (the field's alias): the CDK renders each function's environment from its
model (cdk/functions.py, `environment()`), and the function reads the same model. A value that does not fit fails
the invocation before any work, naming the variable (the one-line error of lambdas/common/errors.py). An empty
variable counts as unset: the default applies.

A handler reads its model per invocation (`from_environ()`, microseconds), not at import: the local runner runs
every function in one process, each invocation seeing its own function's environment (statemachine/local/sandbox.py).
The mixins without required variables (`DatabaseSettings`, `ExtractTuning`, `LoadTuning`) may also be read by the
modules that need one of their values, wherever they are called from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdas.common.errors import PipelineError, one_line

# A number of seconds: finite, never negative.
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _variable(path: str) -> str:
    return f"environment variable {path}"


class Settings(BaseModel):
    """What every function is given: Powertools reads these two itself (the service names the logs and metrics)."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)

    service_name: str | None = Field(None, alias="POWERTOOLS_SERVICE_NAME")
    log_level: str = Field("INFO", alias="POWERTOOLS_LOG_LEVEL")

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every variable this function's model reads, by name."""
        return tuple(str(field.alias) for field in cls.model_fields.values())

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of one field."""
        return str(cls.model_fields[field].alias)

    @classmethod
    def default(cls, field: str) -> Any:
        """The value a field has when its variable is not set."""
        return cls.model_fields[field].get_default(call_default_factory=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from the environment (os.environ unless given), or a PipelineError naming the variable."""
        environ = os.environ if environ is None else environ
        given = {name: environ[name] for name in cls.variables() if environ.get(name)}
        try:
            return cls.model_validate(given)
        except ValidationError as error:
            raise PipelineError(one_line(error, subject="the environment", name=_variable)) from None

    def environment(self) -> dict[str, str]:
        """The variables that carry these settings, as the CDK sets them: the values given, none unset."""
        given = self.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)
        return {name: _rendered(value) for name, value in given.items()}


def _rendered(value: Any) -> str:
    """A value as its variable holds it: whole numbers without a decimal point (3600, not 3600.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class MetricsSettings(Settings):
    """A function that publishes metrics: Powertools refuses to publish without a namespace."""

    metrics_namespace: str = Field("TotesysEtl", alias="POWERTOOLS_METRICS_NAMESPACE")


class IngestionSettings(Settings):
    ingestion_bucket: str = Field(alias="INGESTION_BUCKET", min_length=1)


class ProcessedSettings(Settings):
    processed_bucket: str = Field(alias="PROCESSED_BUCKET", min_length=1)


class DatabaseSettings(Settings):
    """Where a function's database is when its secret holds only the login (an RDS-managed secret: the secret's
    own values win, lambdas/common/db.py with_location), and the CA bundle that verifies the server."""

    database_host: str | None = Field(None, alias="DATABASE_HOST")
    database_port: int | None = Field(None, alias="DATABASE_PORT", gt=0, le=65535)
    database_name: str | None = Field(None, alias="DATABASE_NAME")
    # libpq's own name: the CA certificates (PEM) that verify-ca and verify-full trust; else the runtime's.
    ca_bundle: str | None = Field(None, alias="PGSSLROOTCERT")

    def location(self) -> dict[str, str | int]:
        """host, port and dbname as a secret would give them, those set only."""
        values = {"host": self.database_host, "port": self.database_port, "dbname": self.database_name}
        return {key: value for key, value in values.items() if value is not None}


class ExtractTuning(Settings):
    """How the extract reads: none of these needs setting."""

    # How far before the watermark an incremental read starts: the longest a source transaction can stay open
    # between writing last_updated and committing (lambdas/extract/watermark.py).
    lookback_seconds: Seconds = Field(900, alias="EXTRACT_LOOKBACK_SECONDS")
    # The longest a table goes unscanned on its change signal's word; 0: every run scans (lambdas/extract/signal.py).
    signal_max_age_seconds: Seconds = Field(3600, alias="EXTRACT_SIGNAL_MAX_AGE_SECONDS")
    # Rows one key range reads. One extract invocation read `payment`, the widest large table, at about 240,000
    # rows/s (1.41 M rows at 1 M sales orders; docs/operations.md "Tables larger than one Lambda"). At a tenth of that
    # (a fraction of a vCPU, a real network to the database and S3), 1,500,000 rows take about 65 s: a fifth of the
    # extract function's 5-minute timeout. Memory does not grow with it (record batches, Parquet parts). 0: never
    # split a whole-table read (lambdas/extract/partitioned.py).
    partition_rows: int = Field(1_500_000, alias="EXTRACT_PARTITION_ROWS", ge=0)

    @property
    def lookback(self) -> timedelta:
        return timedelta(seconds=self.lookback_seconds)

    @property
    def signal_max_age(self) -> timedelta:
        return timedelta(seconds=self.signal_max_age_seconds)


class ExtractSettings(IngestionSettings, ProcessedSettings, DatabaseSettings, ExtractTuning, MetricsSettings):
    """The extract function: the source's secret, the lake it writes (and the processed heads the plan reads)."""

    totesys_secret_id: str = Field(alias="TOTESYS_SECRET_ID", min_length=1)


class TransformSettings(IngestionSettings, ProcessedSettings):
    """The transform function: it reads one bucket and writes the other."""


class LoadTuning(Settings):
    """How the load merges and how long it holds fact rows: none of these needs setting."""

    # A held fact row older than this is reported as stuck: its dimension row is probably never coming.
    stuck_after_seconds: Seconds = Field(24 * 3600, alias="HELD_STUCK_AFTER_SECONDS")
    # A merge of at least this many rows drops and re-adds the table's constraints around a bulk insert
    # (lambdas/load/warehouse.py).
    bulk_rows: int = Field(100_000, alias="LOAD_BULK_ROWS", ge=1)

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(seconds=self.stuck_after_seconds)


class LoadSettings(ProcessedSettings, DatabaseSettings, LoadTuning, MetricsSettings):
    """The load function: the warehouse's secret and the processed bucket it loads from."""

    warehouse_secret_id: str = Field(alias="WAREHOUSE_SECRET_ID", min_length=1)


class ReportSettings(MetricsSettings):
    """The report function: where it sends the alert (none: it only logs), and the lease it gives back. Nothing is
    required: the report always reports, and its release of the lease is best effort (lambdas/report/handler.py)."""

    alert_topic_arn: str | None = Field(None, alias="ALERT_TOPIC_ARN")
    ingestion_bucket: str | None = Field(None, alias="INGESTION_BUCKET")


class LeaseSettings(IngestionSettings):
    """The lease function: the lease object sits in the ingestion bucket."""

    # How long a lease lasts if its holder never gives it back: longer than any execution (cdk/stack.py).
    lease_ttl_seconds: Seconds = Field(3900, alias="LEASE_TTL_SECONDS")

    @property
    def lease_ttl(self) -> timedelta:
        return timedelta(seconds=self.lease_ttl_seconds)


# Each function's model, by stage: what the CDK renders and what the handler reads.
FUNCTION_SETTINGS: dict[str, type[Settings]] = {
    "extract": ExtractSettings,
    "transform": TransformSettings,
    "load": LoadSettings,
    "report": ReportSettings,
    "lease": LeaseSettings,
}

"""Each function's settings are one model (lambdas/common/settings.py): the only reader of the environment in the
function code, with defaults in the model and a one-line refusal naming the variable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lambdas.common.errors import PipelineError
from lambdas.common.settings import FUNCTION_SETTINGS, ExtractSettings, LeaseSettings, LoadSettings, LoadTuning

ROOT = Path(__file__).resolve().parents[1]
EXTRACT = {"INGESTION_BUCKET": "in", "PROCESSED_BUCKET": "out", "TOTESYS_SECRET_ID": "totesys/source"}


def _environment_reads(path: Path) -> list[int]:
    """Lines of a module that name os.environ or os.getenv."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv")
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    ]


def test_only_the_settings_module_reads_the_environment_in_the_function_code() -> None:
    reads = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "lambdas").rglob("*.py"))
        if (lines := _environment_reads(path))
    }
    # credentials.credentials_from_dsn takes libpq's PGPASSWORD for the local command's DSNs; no function calls it.
    assert set(reads) == {"lambdas/common/settings.py", "lambdas/common/credentials.py"}, reads
    assert len(reads["lambdas/common/credentials.py"]) == 1


def test_defaults_live_in_the_model() -> None:
    settings = ExtractSettings.from_environ(EXTRACT)
    assert (settings.lookback_seconds, settings.signal_max_age_seconds, settings.partition_rows) == (
        900,
        3600,
        1_500_000,
    )
    assert settings.environment() == EXTRACT  # only what was given is rendered: the defaults stay in the model
    assert LeaseSettings.from_environ({"INGESTION_BUCKET": "in"}).lease_ttl.total_seconds() == 3900
    assert LoadTuning.from_environ({}).bulk_rows == 100_000
    # an empty variable is an unset one
    assert ExtractSettings.from_environ({**EXTRACT, "EXTRACT_PARTITION_ROWS": ""}).partition_rows == 1_500_000


@pytest.mark.parametrize(
    ("model", "environ", "refusal"),
    [
        (ExtractSettings, {**EXTRACT, "EXTRACT_PARTITION_ROWS": "-5"},
         "environment variable EXTRACT_PARTITION_ROWS must be at least 0, got '-5'"),
        (ExtractSettings, {**EXTRACT, "EXTRACT_PARTITION_ROWS": "many"},
         "environment variable EXTRACT_PARTITION_ROWS must be a whole number, got 'many'"),
        (ExtractSettings, {**EXTRACT, "EXTRACT_SIGNAL_MAX_AGE_SECONDS": "inf"},
         "environment variable EXTRACT_SIGNAL_MAX_AGE_SECONDS must be a finite number, got 'inf'"),
        (ExtractSettings, {**EXTRACT, "TOTESYS_SECRET_ID": ""}, "environment variable TOTESYS_SECRET_ID is required"),
        (LoadSettings, {"PROCESSED_BUCKET": "out", "WAREHOUSE_SECRET_ID": "w", "HELD_STUCK_AFTER_SECONDS": "soon"},
         "environment variable HELD_STUCK_AFTER_SECONDS must be a number, got 'soon'"),
        (LoadSettings, {"PROCESSED_BUCKET": "out", "WAREHOUSE_SECRET_ID": "w", "DATABASE_PORT": "0"},
         "environment variable DATABASE_PORT must be more than 0, got '0'"),
    ],
)  # fmt: skip
def test_a_setting_that_does_not_fit_is_refused_in_one_line_naming_the_variable(
    model: type[ExtractSettings], environ: dict[str, str], refusal: str
) -> None:
    with pytest.raises(PipelineError) as refused:
        model.from_environ(environ)
    assert str(refused.value) == refusal


def test_every_function_has_a_model_and_each_variable_one_meaning() -> None:
    assert set(FUNCTION_SETTINGS) == {"extract", "transform", "load", "report", "lease"}
    for model in FUNCTION_SETTINGS.values():
        names = model.variables()
        assert len(names) == len(set(names)), model
        assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL"} <= set(names)

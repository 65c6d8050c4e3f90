"""The typed configuration read from the CDK context, and the readable errors of a bad context."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from pydantic import ValidationError

from app import build_app
from cdk.config import (
    CONTEXT_KEYS,
    DEFAULTS,
    LOG_RETENTION_DAYS,
    MAX_STACK_NAME_LENGTH,
    MISSING_CA_BUNDLE,
    ConfigError,
    DatabaseLocation,
    DatabaseNetwork,
    PipelineConfig,
    context_table,
    documented_table,
)
from cdk.config import main as write_context_table
from cdk.stack import RETENTION_BY_DAYS
from lambdas.common.tables import SOURCE_TABLES
from tests.cdk.support import PLAIN_CONTEXT, REPO_ROOT, VARIANT_CONTEXT


def config_from(context: dict[str, Any]) -> PipelineConfig:
    """The configuration of ``context`` with the CA choice every deploy command makes (unless it makes its own)."""
    return PipelineConfig.from_context({**PLAIN_CONTEXT, **{k: v for k, v in context.items() if v is not None}}.get)


def test_cdk_json_holds_exactly_the_documented_defaults(context: dict[str, Any]) -> None:
    settings = {key: value for key, value in context.items() if not key.startswith("@") and key != "cli-telemetry"}
    assert settings == {key: value for key, value in DEFAULTS.items() if key != "account"}


def test_cdk_json_context_gives_the_defaults(context: dict[str, Any]) -> None:
    config = config_from(context)

    assert config.region == "eu-west-2"
    assert config.totesys_secret_name == "totesys/source"
    assert config.warehouse_secret_name == "totesys/warehouse"
    assert config.schedule == "rate(5 minutes)"
    assert config.tables is None
    assert config.schedule_input == {}
    assert config.alert_emails == ()
    assert config.log_retention_days == 30
    assert config.max_source_connections == 4
    assert config.reserve_extract_concurrency is False
    assert config.extract_lookback_seconds == 900
    assert config.extract_signal_max_age_seconds == 3600
    assert config.held_stuck_after_seconds == 86400
    assert config.tracing is True
    assert config.dashboard is False, "opt-in: $3 a month (docs/operations.md#the-dashboard)"
    assert config.network is None
    assert config.retention.noncurrent_version_expiration_days == 90
    assert config.retention.data_transition_days == 90
    assert config.retention.data_expiration_days is None
    assert config.retention.access_log_retention_days == 365


def test_missing_keys_fall_back_to_defaults() -> None:
    assert config_from({}) == config_from(DEFAULTS)


def test_cli_strings_are_accepted() -> None:
    # `cdk synth -c key=value` passes every value as a string.
    config = config_from({**VARIANT_CONTEXT, "alert_emails": "ops@example.com, d@x.co.uk"})

    assert config.alert_emails == ("ops@example.com", "d@x.co.uk")
    assert config.tables == ("sales_order", "staff")
    assert config.schedule_input == {"tables": ["sales_order", "staff"]}
    assert config.max_source_connections == 2
    assert config.tracing is False
    assert config.dashboard is True
    assert config.network == DatabaseNetwork(
        vpc_id="vpc-0123456789abcdef0",
        subnet_ids=("subnet-0123456789abcdef0", "subnet-0123456789abcdef1"),
        security_group_ids=("sg-0123456789abcdef0",),
    )
    assert config.retention.data_expiration_days == 730
    assert config_from({"alert_emails": '["a@example.com"]'}).alert_emails == ("a@example.com",)
    assert config_from({"tables": '["staff"]', "tracing": "TRUE"}).schedule_input == {"tables": ["staff"]}
    assert (
        config_from({"data_expiration_days": "none", "log_retention_days": "90"}).retention.data_expiration_days is None
    )


def test_an_empty_table_list_means_every_table() -> None:
    for empty in ([], "", "[]"):
        assert config_from({"tables": empty}).schedule_input == {}
    assert config_from({"tables": list(SOURCE_TABLES)}).tables == SOURCE_TABLES


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alert_emails": ["ops@example.com", "not-an-email"]}, "alert_emails[1] 'not-an-email' is not a valid e-mail"),
        ({"alert_emails": ["a@b"]}, "alert_emails[0] 'a@b' is not a valid e-mail address"),
        ({"alert_emails": ["x@example.com", "X@example.com"]}, "alert_emails[1] 'X@example.com' is listed twice"),
        ({"alert_emails": "[oops"}, "is not a JSON list of e-mail addresses"),
        ({"schedule": "every 5 minutes"}, "schedule 'every 5 minutes' is not an EventBridge schedule expression"),
        ({"schedule": "rate(5 minute)"}, "write 'rate(1 minute)' for 1 and the plural otherwise"),
        ({"schedule": "rate(0 minutes)"}, "a rate must be at least 1"),
        ({"schedule": "cron(0 6 * * *)"}, "a cron expression has 6 fields"),
        ({"schedule": "cron(0 6 * * * *)"}, "one of day-of-month and day-of-week must be '?'"),
        ({"tables": ["sales_order", "sales_orders"]}, "tables[1] 'sales_orders' is not a totesys source table (one of"),
        ({"tables": "staff,dim_staff"}, "tables[1] 'dim_staff' is not a totesys source table"),
        ({"tables": ["staff", "staff"]}, "tables[1] 'staff' is listed twice"),
        ({"tables": {"staff": True}}, "must be a list of source table names"),
        ({"region": "${Token[AWS.Region]}"}, "must be a concrete AWS region"),
        ({"stack_name": "S" * 72}, "must start with a letter, contain only letters, digits and '-', and be at most 71"),
        ({"stack_name": "Totesys_Etl"}, "stack_name 'Totesys_Etl' must start with a letter"),
        ({"region": "cn-north-1"}, "must be a concrete AWS region"),
        ({"log_retention_days": 31}, "log_retention_days 31 is not a CloudWatch Logs retention period"),
        ({"log_retention_days": "a month"}, "log_retention_days 'a month' must be a whole number"),
        ({"totesys_secret_name": "totesys source"}, "must be a Secrets Manager secret name"),
        ({"reserve_extract_concurrency": "yes"}, "reserve_extract_concurrency 'yes' must be true or false"),
        ({"warehouse_port": 70000}, "warehouse_port 70000 must be at most 65535"),
        ({"totesys_port": "x"}, "totesys_port 'x' must be a whole number"),
        ({"totesys_host": "db host"}, "totesys_host 'db host' is not a host name or address"),
        ({"warehouse_dbname": "ware house"}, "warehouse_dbname 'ware house' is not a PostgreSQL database name"),
        ({"account": "12345"}, "must be a 12-digit AWS account id"),
        ({"max_source_connections": 0}, "max_source_connections 0 must be at least 1"),
        ({"max_source_connections": "four"}, "max_source_connections 'four' must be a whole number"),
        ({"extract_lookback_seconds": -1}, "extract_lookback_seconds -1 must be at least 0"),
        ({"extract_lookback_seconds": 100_000}, "extract_lookback_seconds 100000 must be at most 86400"),
        ({"extract_signal_max_age_seconds": -5}, "extract_signal_max_age_seconds -5 must be at least 0"),
        ({"extract_signal_max_age_seconds": 90_000}, "extract_signal_max_age_seconds 90000 must be at most 86400"),
        ({"extract_partition_rows": -5}, "extract_partition_rows -5 must be at least 0"),
        ({"extract_partition_rows": "many"}, "extract_partition_rows 'many' must be a whole number"),
        ({"held_stuck_after_seconds": 60}, "held_stuck_after_seconds 60 must be at least 300"),
        ({"held_stuck_after_seconds": 3_000_000}, "held_stuck_after_seconds 3000000 must be at most 2592000"),
        ({"tracing": "yes"}, "tracing 'yes' must be true or false"),
        ({"dashboard": "please"}, "dashboard 'please' must be true or false"),
        ({"vpc_id": "vpc-0123456789abcdef0"}, "vpc_id is set, so subnet_ids must list the private subnets"),
        (
            {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-0123456789abcdef0"]},
            "vpc_id is set, so security_group_ids must list the security groups",
        ),
        ({"subnet_ids": ["subnet-0123456789abcdef0"]}, "subnet_ids and security_group_ids are only used together"),
        ({"security_group_ids": "sg-0123456789abcdef0"}, "subnet_ids and security_group_ids are only used together"),
        (
            {"vpc_id": "vpc-123", "subnet_ids": ["subnet-0123456789abcdef0"], "security_group_ids": ["sg-01234567"]},
            "vpc_id 'vpc-123' is not a VPC id such as 'vpc-0123456789abcdef0'",
        ),
        (
            {"vpc_id": "vpc-01234567", "subnet_ids": ["sg-01234567"], "security_group_ids": ["sg-01234567"]},
            "subnet_ids[0] 'sg-01234567' is not an id such as 'subnet-0123456789abcdef0'",
        ),
        (
            {"vpc_id": "vpc-01234567", "subnet_ids": "subnet-01234567", "security_group_ids": "sg-XYZ"},
            "security_group_ids[0] 'sg-XYZ' is not an id such as 'sg-0123456789abcdef0'",
        ),
        (
            {
                "vpc_id": "vpc-01234567",
                "subnet_ids": [f"subnet-{i:08x}" for i in range(17)],
                "security_group_ids": ["sg-01234567"],
            },
            "subnet_ids lists 17 subnets; Lambda accepts at most 16",
        ),
        ({"data_transition_days": 10}, "data_transition_days 10 must be at least 30"),
        ({"data_expiration_days": 100}, "data_expiration_days 100 must be at least 365"),
        (
            {"data_transition_days": 400, "data_expiration_days": 400},
            "data_expiration_days 400 must be later than data_transition_days 400",
        ),
        ({"noncurrent_version_expiration_days": 0}, "noncurrent_version_expiration_days 0 must be at least 1"),
        ({"access_log_retention_days": "forever"}, "access_log_retention_days 'forever' must be a whole number"),
    ],
)
def test_invalid_values_are_rejected_with_a_readable_message(
    context: dict[str, Any], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from({**context, **overrides})

    assert message in str(raised.value)
    assert str(raised.value).startswith("Invalid CDK context:")


def test_every_problem_is_reported_at_once(context: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from({**context, "schedule": "hourly", "alert_emails": ["nobody"], "tables": ["nothing"]})

    assert "schedule 'hourly'" in str(raised.value)
    assert "alert_emails[0] 'nobody'" in str(raised.value)
    assert "tables[0] 'nothing'" in str(raised.value)


def test_build_app_fails_on_bad_context_before_building_anything(context: dict[str, Any]) -> None:
    app = cdk.App(context={**context, "alert_emails": ["ops(at)example.com"], "vpc_id": "vpc-0123456789abcdef0"})

    with pytest.raises(ConfigError, match=r"alert_emails\[0\] 'ops\(at\)example.com' is not a valid e-mail") as raised:
        build_app(app)
    assert "subnet_ids must list the private subnets" in str(raised.value)
    assert app.node.children == []


def test_the_longest_stack_name_still_names_a_valid_state_machine(context: dict[str, Any]) -> None:
    stack = build_app(cdk.App(context={**context, **PLAIN_CONTEXT, "stack_name": "S" * MAX_STACK_NAME_LENGTH}))

    assert MAX_STACK_NAME_LENGTH == 71
    assert stack.state_machine_name == "S" * 71 + "-pipeline"


def test_every_accepted_retention_period_maps_to_a_cdk_retention() -> None:
    assert set(RETENTION_BY_DAYS) == LOG_RETENTION_DAYS


def test_deploy_guide_documents_every_context_key_with_its_default() -> None:
    guide = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", guide, flags=re.MULTILINE))

    assert set(rows) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        if isinstance(default, bool):
            shown = "`true`" if default else "`false`"
        elif default is None or default == []:
            shown = "none"
        else:
            shown = f"`{default}`"
        assert rows[key].strip().startswith(shown), (key, rows[key])


def test_a_synth_that_verifies_the_databases_without_a_ca_bundle_fails_in_one_line_saying_what_to_add(
    context: dict[str, Any],
) -> None:
    app = cdk.App(context=context)  # cdk.json as it is: database_ca_bundle unset
    with pytest.raises(ConfigError) as raised:
        build_app(app)
    (line,) = [line for line in str(raised.value).splitlines() if "database_ca_bundle" in line]
    assert line == f"  - {MISSING_CA_BUNDLE}"
    assert "-c database_ca_bundle=global-bundle.pem" in line and "-c database_ca_bundle=runtime" in line
    assert app.node.children == []


def test_the_ca_choice_is_a_bundle_or_the_runtimes_public_cas(context: dict[str, Any]) -> None:
    bundle = REPO_ROOT / "tests" / "cdk" / "test-database-ca.pem"
    assert config_from({**context, "database_ca_bundle": str(bundle)}).database_ca_bundle == bundle.resolve()
    assert config_from({**context, "database_ca_bundle": "runtime"}).database_ca_bundle is None


def test_where_each_database_is_completes_a_login_only_secret(context: dict[str, Any]) -> None:
    config = config_from({**context, "totesys_host": "totesys.abc.eu-west-2.rds.amazonaws.com", "totesys_port": "5433",
                          "totesys_dbname": "totesys", "warehouse_host": "10.0.1.5"})  # fmt: skip
    assert config.totesys_location == DatabaseLocation(
        host="totesys.abc.eu-west-2.rds.amazonaws.com", port=5433, dbname="totesys"
    )
    assert config.warehouse_location == DatabaseLocation(host="10.0.1.5")
    assert config_from(context).warehouse_location == DatabaseLocation()


def test_the_deploy_guides_table_is_the_one_the_model_generates() -> None:
    guide = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")

    assert documented_table(guide) == context_table(), "regenerate it: python -m cdk.config docs/deploy.md"
    assert [row.split("`")[1] for row in context_table().splitlines()[2:]] == list(CONTEXT_KEYS)


def test_the_generator_rewrites_only_the_table(tmp_path: Path) -> None:
    guide = tmp_path / "deploy.md"
    original = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    guide.write_text(original.replace("| `tracing` | `true` |", "| `tracing` | `false` |"), encoding="utf-8")

    assert write_context_table([str(guide)]) == 0
    assert guide.read_text(encoding="utf-8") == original


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("alert_email", "alert_email is not a setting of this stack: did you mean alert_emails?"),
        ("vpc-id", "vpc-id is not a setting of this stack: did you mean vpc_id?"),
        ("frobnicate", "frobnicate is not a setting of this stack (the settings are listed in docs/deploy.md)"),
        ("network", "network is not a setting of this stack (the settings are listed in docs/deploy.md)"),  # a group
    ],
)
def test_an_unknown_key_of_ours_is_refused_naming_the_setting_meant(
    context: dict[str, Any], key: str, message: str
) -> None:
    app = cdk.App(context={**context, **PLAIN_CONTEXT, key: "x"})

    with pytest.raises(ConfigError) as raised:
        build_app(app)
    assert str(raised.value).splitlines()[1:] == [f"  - {message}"]
    assert app.node.children == []


def test_the_cdks_own_context_keys_are_not_ours_to_refuse(context: dict[str, Any]) -> None:
    # Feature flags (cdk.json), the CLI's own keys, cached lookups, the CLI's telemetry switch.
    cdks = {"@aws-cdk/core:newFlag": True, "aws:cdk:enable-path-metadata": True, "cli-telemetry": False,
            "availability-zones:account=123456789012:region=eu-west-2": ["eu-west-2a"]}  # fmt: skip

    config = PipelineConfig.from_context({**context, **PLAIN_CONTEXT, **cdks})

    assert config == config_from(context)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_source_connections": "0"}, "max_source_connections 0 must be at least 1"),  # -c arrives as text
        ({"max_source_connections": True}, "max_source_connections True must be a whole number"),
        ({"extract_lookback_seconds": 1.5}, "extract_lookback_seconds 1.5 must be a whole number"),
        ({"extract_lookback_seconds": "-1"}, "extract_lookback_seconds -1 must be at least 0"),
        ({"tracing": 1}, "tracing 1 must be true or false"),
        ({"region": 2}, "region 2 must be a concrete AWS region of the commercial partition, such as 'eu-west-2'"),
        ({"route_table_ids": "rtb-01234567,rtb-01234567", "vpc_endpoints": True},
         "route_table_ids[1] 'rtb-01234567' is listed twice"),
        ({"security_group_ids": [f"sg-{i:08x}" for i in range(6)], "subnet_ids": "subnet-01234567",
          "vpc_id": "vpc-01234567"}, "security_group_ids lists 6 groups; Lambda accepts at most 5"),
        ({"totesys_port": "none", "data_expiration_days": ""}, None),  # an optional value unset from the command line
    ],
)  # fmt: skip
def test_each_value_is_checked_as_the_command_line_and_cdk_json_give_it(
    context: dict[str, Any], overrides: dict[str, Any], message: str | None
) -> None:
    if message is None:
        config = config_from({**context, **overrides})
        assert (config.totesys_location.port, config.retention.data_expiration_days) == (None, None)
        return
    with pytest.raises(ConfigError) as raised:
        config_from({**context, **overrides})
    assert f"  - {message}" in str(raised.value).splitlines()


def test_every_rule_across_settings_is_reported_at_once(context: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from({**context, "vpc_endpoints": "true"})

    assert str(raised.value).splitlines()[1:] == [
        "  - vpc_endpoints=true needs vpc_id, subnet_ids and security_group_ids: the endpoints go there",
        "  - vpc_endpoints=true needs route_table_ids: the route tables of subnet_ids (the S3 gateway)",
    ]


def test_a_rule_of_one_group_is_reported_beside_the_bad_values_of_others(context: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from({**context, "tracing": "yes", "data_transition_days": 400, "data_expiration_days": 400,
                     "security_group_ids": "sg-01234567"})  # fmt: skip

    assert str(raised.value).splitlines()[1:] == [
        "  - tracing 'yes' must be true or false",
        "  - subnet_ids and security_group_ids are only used together with vpc_id: set vpc_id to the VPC of the "
        "databases, or leave all three unset",
        "  - data_expiration_days 400 must be later than data_transition_days 400",
    ]


def test_the_configuration_cannot_be_changed_once_read(context: dict[str, Any]) -> None:
    config = config_from(context)

    with pytest.raises(ValidationError):
        config.tracing = False  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.retention.data_transition_days = 30  # type: ignore[misc]

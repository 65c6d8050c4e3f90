"""The typed configuration read from the CDK context, and the readable errors of a bad context."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest

from app import build_app
from cdk.config import DEFAULTS, LOG_RETENTION_DAYS, ConfigError, PipelineConfig
from cdk.stack import RETENTION_BY_DAYS


def config_from(context: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.from_context(context.get)


def test_cdk_json_context_gives_the_documented_defaults(context: dict[str, Any]) -> None:
    config = config_from(context)

    assert config.region == "eu-west-2"
    assert config.totesys_secret_name == "totesys/source"
    assert config.warehouse_secret_name == "totesys/warehouse"
    assert config.schedule == "rate(5 minutes)"
    assert config.alert_emails == ()
    assert config.log_retention_days == 30


def test_missing_keys_fall_back_to_defaults() -> None:
    assert config_from({}) == config_from(DEFAULTS)


def test_cli_strings_are_accepted() -> None:
    # `cdk synth -c key=value` passes every value as a string.
    config = config_from(
        {
            "alert_emails": "ops@example.com, data.team@example.co.uk",
            "log_retention_days": "90",
            "pandas_layer_version": "12",
            "schedule": "cron(0 6 * * ? *)",
        }
    )

    assert config.alert_emails == ("ops@example.com", "data.team@example.co.uk")
    assert config.log_retention_days == 90
    assert config.pandas_layer_version == 12
    assert config.schedule == "cron(0 6 * * ? *)"
    assert config_from({"alert_emails": '["a@example.com"]'}).alert_emails == ("a@example.com",)


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
        ({"region": "${Token[AWS.Region]}"}, "must be a concrete AWS region"),
        ({"region": "cn-north-1"}, "must be a concrete AWS region"),
        ({"log_retention_days": 31}, "log_retention_days 31 is not a CloudWatch Logs retention period"),
        ({"log_retention_days": "a month"}, "log_retention_days 'a month' must be a whole number"),
        ({"totesys_secret_name": "totesys source"}, "must be a Secrets Manager secret name"),
        ({"pandas_layer_version": 0}, "pandas_layer_version 0 must be at least 1"),
        ({"account": "12345"}, "must be a 12-digit AWS account id"),
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
        config_from({**context, "schedule": "hourly", "alert_emails": ["nobody"]})

    assert "schedule 'hourly'" in str(raised.value)
    assert "alert_emails[0] 'nobody'" in str(raised.value)


def test_build_app_fails_on_bad_context_before_building_anything(context: dict[str, Any]) -> None:
    app = cdk.App(context={**context, "alert_emails": ["ops(at)example.com"], "schedule": "rate(five minutes)"})

    with pytest.raises(ConfigError, match=r"alert_emails\[0\] 'ops\(at\)example.com' is not a valid e-mail"):
        build_app(app)
    assert app.node.children == []


def test_every_accepted_retention_period_maps_to_a_cdk_retention() -> None:
    assert set(RETENTION_BY_DAYS) == LOG_RETENTION_DAYS

"""QuickSight in the stack: off by default; with its context, a data source signing in with the warehouse secret,
one data set per analytics query, and a dashboard with a visual for each, shared with the given principal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analytics.datasets import DATA_SETS
from cdk.config import ConfigError, PipelineConfig
from cdk.quicksight import DASHBOARD_OWNER_ACTIONS, DATA_SET_USER_ACTIONS, DATA_SOURCE_USER_ACTIONS
from tests.cdk.support import (
    PLAIN_CONTEXT,
    QUICKSIGHT_PRINCIPAL,
    QUICKSIGHT_SECRET_ARN,
    VARIANT_CONTEXT,
    Synthesized,
    synthesize,
)

QUICKSIGHT_CONTEXT = {
    "quicksight_principal_arn": QUICKSIGHT_PRINCIPAL,
    "quicksight_warehouse_secret_arn": QUICKSIGHT_SECRET_ARN,
}


@pytest.fixture(scope="module")
def without_vpc(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """QuickSight on, databases reachable without a VPC (the cdk.json defaults otherwise)."""
    return synthesize({**context, **PLAIN_CONTEXT, **QUICKSIGHT_CONTEXT}, tmp_path_factory.mktemp("cdk.out.quicksight"))


def only(synthesized: Synthesized, resource_type: str) -> tuple[str, dict[str, Any]]:
    ((logical, resource),) = synthesized.resources(resource_type).items()
    return logical, resource["Properties"]


def dynamic_reference(field: str) -> str:
    return f"{{{{resolve:secretsmanager:{QUICKSIGHT_SECRET_ARN}:SecretString:{field}::}}}}"


def test_quicksight_is_off_unless_its_context_is_given(synthesized: Synthesized) -> None:
    assert not [r for r in synthesized.resources_json.values() if r["Type"].startswith("AWS::QuickSight::")]
    assert "QuickSightDashboardId" not in synthesized.template_json.get("Outputs", {})


@pytest.mark.parametrize("shape", ["variant", "without_vpc"])
def test_the_data_source_signs_in_with_the_warehouse_secret_and_holds_no_credential(shape, request) -> None:
    synthesized: Synthesized = request.getfixturevalue(shape)
    _, source = only(synthesized, "AWS::QuickSight::DataSource")

    assert source["Type"] == "POSTGRESQL"
    assert source["Credentials"] == {"SecretArn": QUICKSIGHT_SECRET_ARN}
    # The port is an integer in the template (CloudFormation resolves a dynamic reference to a string); where the
    # warehouse is comes from the context when it is given, else from the secret, at deploy.
    expected = {
        "variant": {"Host": VARIANT_CONTEXT["warehouse_host"], "Port": VARIANT_CONTEXT["warehouse_port"],
                    "Database": VARIANT_CONTEXT["warehouse_dbname"]},
        "without_vpc": {"Host": dynamic_reference("host"), "Port": 5432, "Database": dynamic_reference("dbname")},
    }[shape]  # fmt: skip
    assert source["DataSourceParameters"]["PostgreSqlParameters"] == expected
    assert source["SslProperties"] == {"DisableSsl": False}
    assert source["Permissions"] == [{"Principal": QUICKSIGHT_PRINCIPAL, "Actions": list(DATA_SOURCE_USER_ACTIONS)}]
    text = json.dumps(synthesized.template_json)
    assert "CredentialPair" not in text and "password" not in text.lower()


def test_with_a_vpc_quicksight_reaches_the_warehouse_through_a_vpc_connection(variant: Synthesized) -> None:
    connection_id, connection = only(variant, "AWS::QuickSight::VPCConnection")
    _, source = only(variant, "AWS::QuickSight::DataSource")

    assert connection["SubnetIds"] == VARIANT_CONTEXT["subnet_ids"]
    assert connection["SecurityGroupIds"] == [VARIANT_CONTEXT["security_group_ids"]]
    assert source["VpcConnectionProperties"] == {"VpcConnectionArn": {"Fn::GetAtt": [connection_id, "Arn"]}}
    role_id = connection["RoleArn"]["Fn::GetAtt"][0]
    # QuickSight assumes the role as it creates the connection: its policy must exist by then.
    (policy_id,) = [
        k for k, r in variant.resources("AWS::IAM::Policy").items() if {"Ref": role_id} in r["Properties"]["Roles"]
    ]
    assert policy_id in variant.resources_json[connection_id]["DependsOn"]
    trust = variant.properties(role_id)["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "quicksight.amazonaws.com"}}
    ]
    actions = {a for s in variant.role_statements(role_id) for a in ([s["Action"]] if isinstance(s["Action"], str)
                                                                      else s["Action"])}  # fmt: skip
    assert actions == {
        "ec2:CreateNetworkInterface",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:DeleteNetworkInterface",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
    }


def test_without_a_vpc_there_is_no_vpc_connection(without_vpc: Synthesized) -> None:
    assert without_vpc.resources("AWS::QuickSight::VPCConnection") == {}
    _, source = only(without_vpc, "AWS::QuickSight::DataSource")
    assert "VpcConnectionProperties" not in source


def test_one_direct_query_data_set_per_analytics_query(variant: Synthesized) -> None:
    source_id, _ = only(variant, "AWS::QuickSight::DataSource")
    data_sets = {
        r["Properties"]["Name"]: r["Properties"] for r in variant.resources("AWS::QuickSight::DataSet").values()
    }

    assert set(data_sets) == {data_set.title for data_set in DATA_SETS}
    for data_set in DATA_SETS:
        properties = data_sets[data_set.title]
        assert properties["ImportMode"] == "DIRECT_QUERY", "live queries: the freshness data set means now"
        assert properties["DataSetId"] == f"TotesysEtl-{data_set.name}"
        ((table,),) = [list(properties["PhysicalTableMap"].values())]
        assert table["CustomSql"]["SqlQuery"] == data_set.sql.strip()
        assert table["CustomSql"]["DataSourceArn"] == {"Fn::GetAtt": [source_id, "Arn"]}
        assert table["CustomSql"]["Columns"] == [{"Name": c.name, "Type": c.type} for c in data_set.columns]
        assert properties["Permissions"] == [
            {"Principal": QUICKSIGHT_PRINCIPAL, "Actions": list(DATA_SET_USER_ACTIONS)}
        ]


def test_the_dashboard_has_a_bar_chart_of_each_data_set_shared_with_the_principal(variant: Synthesized) -> None:
    _, dashboard = only(variant, "AWS::QuickSight::Dashboard")
    data_set_ids = {r["Properties"]["DataSetId"]: logical for logical, r in
                    variant.resources("AWS::QuickSight::DataSet").items()}  # fmt: skip
    definition = dashboard["Definition"]

    declared = {d["Identifier"]: d["DataSetArn"] for d in definition["DataSetIdentifierDeclarations"]}
    assert declared == {
        data_set.name: {"Fn::GetAtt": [data_set_ids[f"TotesysEtl-{data_set.name}"], "Arn"]} for data_set in DATA_SETS
    }
    ((sheet,),) = [definition["Sheets"]]
    charts = {visual["BarChartVisual"]["VisualId"]: visual["BarChartVisual"] for visual in sheet["Visuals"]}
    assert len(charts) == len(DATA_SETS)
    for data_set in DATA_SETS:
        chart = charts[f"visual-{data_set.name}"]
        assert chart["Title"]["FormatText"]["PlainText"] == data_set.title
        wells = chart["ChartConfiguration"]["FieldWells"]["BarChartAggregatedFieldWells"]
        (value,) = wells["Values"]
        assert value["NumericalMeasureField"]["Column"] == {
            "DataSetIdentifier": data_set.name,
            "ColumnName": data_set.chart.y,
        }
        (category,) = wells["Category"]
        (field,) = category.values()
        assert field["Column"] == {"DataSetIdentifier": data_set.name, "ColumnName": data_set.chart.x}
        assert len(wells.get("Colors", [])) == (1 if data_set.chart.colour else 0)
    placed = [e["ElementId"] for e in sheet["Layouts"][0]["Configuration"]["GridLayout"]["Elements"]]
    assert sorted(placed) == sorted(charts)
    assert dashboard["Permissions"] == [{"Principal": QUICKSIGHT_PRINCIPAL, "Actions": list(DASHBOARD_OWNER_ACTIONS)}]
    # Owner: the principal can change, share and delete what the stack made, not only look at it.
    assert {"quicksight:UpdateDashboard", "quicksight:UpdateDashboardPermissions"} <= set(DASHBOARD_OWNER_ACTIONS)
    assert variant.template_json["Outputs"]["QuickSightDashboardId"]["Value"] == "TotesysEtl-warehouse"


def test_the_quicksight_shape_passes_cdk_nag(without_vpc: Synthesized) -> None:
    # The variant (with a VPC connection) is checked by test_cdk_nag; this is the shape without one.
    for pack in ("AwsSolutions", "Serverless"):
        assert without_vpc.plugin_report(pack)["conclusion"] == "success"


def config_with(**context: Any) -> PipelineConfig:
    return PipelineConfig.from_context({**PLAIN_CONTEXT, **QUICKSIGHT_CONTEXT, **context}.get)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"quicksight_warehouse_secret_arn": None}, "turn QuickSight on together"),
        ({"quicksight_principal_arn": ""}, "turn QuickSight on together"),
        ({"quicksight_principal_arn": "analysts"}, "is not a QuickSight user or group ARN"),
        ({"account": "111111111111"}, "is not in account 111111111111"),
        ({"quicksight_warehouse_secret_arn": "totesys/warehouse"}, "is not a complete Secrets Manager secret ARN"),
        ({"warehouse_secret_name": "other/warehouse"}, "is not the warehouse secret of this stack"),
        ({"region": "eu-west-1"}, "is not the warehouse secret of this stack"),
        (
            {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": "subnet-0123456789abcdef0",
             "security_group_ids": "sg-0123456789abcdef0"},
            "at least 2 availability zones",
        ),
    ],
)  # fmt: skip
def test_quicksight_context_is_validated(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(**context)


def test_quicksight_context_is_read_into_the_config() -> None:
    sharing = config_with().quicksight
    assert sharing is not None
    assert (sharing.principal_arn, sharing.warehouse_secret_arn) == (QUICKSIGHT_PRINCIPAL, QUICKSIGHT_SECRET_ARN)
    assert PipelineConfig.from_context(PLAIN_CONTEXT.get).quicksight is None


def test_deploy_guide_says_how_to_turn_quicksight_on() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "-c quicksight_principal_arn=" in guide and "-c quicksight_warehouse_secret_arn=" in guide

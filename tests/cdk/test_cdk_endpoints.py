"""Optional VPC endpoints, for private subnets without NAT: what extract and load call from there, reachable."""

from __future__ import annotations

from typing import Any

import pytest

from cdk.config import ConfigError, PipelineConfig
from cdk.endpoints import interface_services
from tests.cdk.support import PLAIN_CONTEXT, VARIANT_CONTEXT, Synthesized

ROUTE_TABLES = ["rtb-0123456789abcdef0", "rtb-0123456789abcdef1"]


def endpoints(synth: Synthesized) -> dict[str, dict[str, Any]]:
    """Service (the last part of its name) -> endpoint properties."""
    return {
        resource["Properties"]["ServiceName"].split(".")[-1]: resource["Properties"]
        for resource in synth.resources("AWS::EC2::VPCEndpoint").values()
    }


def test_no_endpoint_unless_the_context_asks(synthesized: Synthesized) -> None:
    assert endpoints(synthesized) == {}
    assert synthesized.resources("AWS::EC2::SecurityGroup") == {}


def test_s3_through_a_gateway_on_the_route_tables_of_the_functions_subnets(variant: Synthesized) -> None:
    s3 = endpoints(variant)["s3"]
    assert s3["VpcEndpointType"] == "Gateway"
    assert s3["VpcId"] == VARIANT_CONTEXT["vpc_id"]
    assert s3["RouteTableIds"] == ROUTE_TABLES
    assert s3["ServiceName"] == "com.amazonaws.eu-west-2.s3"


def test_secrets_manager_through_an_interface_in_the_functions_subnets_reachable_on_https(
    variant: Synthesized,
) -> None:
    found = endpoints(variant)
    assert set(found) == {"s3", *interface_services(tracing=False)} == {"s3", "secretsmanager"}  # tracing off here
    secrets = found["secretsmanager"]
    assert (secrets["VpcEndpointType"], secrets["PrivateDnsEnabled"]) == ("Interface", True)
    assert secrets["SubnetIds"] == VARIANT_CONTEXT["subnet_ids"]
    ((group_id, group),) = variant.resources("AWS::EC2::SecurityGroup").items()
    assert secrets["SecurityGroupIds"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]
    rules = group["Properties"]["SecurityGroupIngress"]
    assert [(r["SourceSecurityGroupId"], r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules] == [
        (VARIANT_CONTEXT["security_group_ids"], "tcp", 443, 443)
    ]


def test_with_tracing_x_ray_gets_an_endpoint_too() -> None:
    assert interface_services(tracing=True) == ("secretsmanager", "xray")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"vpc_endpoints": "true", "route_table_ids": ROUTE_TABLES}, "vpc_endpoints=true needs vpc_id"),
        ({**{k: VARIANT_CONTEXT[k] for k in ("vpc_id", "subnet_ids", "security_group_ids")}, "vpc_endpoints": True},
         "vpc_endpoints=true needs route_table_ids"),
        ({"route_table_ids": ROUTE_TABLES}, "route_table_ids is only used with vpc_endpoints=true"),
        ({"vpc_endpoints": "true", "route_table_ids": "rtb-x"}, "route_table_ids[0] 'rtb-x' is not an id"),
    ],
)  # fmt: skip
def test_endpoint_context_is_validated(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PipelineConfig.from_context({**PLAIN_CONTEXT, **context}.get)

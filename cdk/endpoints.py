"""VPC endpoints for the functions in the database subnets, for an account whose private subnets have no NAT.

Optional (context ``vpc_endpoints``): extract and load, which run in those subnets, call S3 (a gateway endpoint on
the subnets' route tables) and Secrets Manager, and, with tracing, X-Ray (interface endpoints, reached on 443 from
the functions' security groups). Logs and metrics need none: Lambda ships the functions' logs, and the metrics are
written into them (embedded metric format). The report, which publishes to SNS, does not run in the VPC.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from cdk.config import DatabaseNetwork

HTTPS = 443


def interface_services(*, tracing: bool) -> tuple[str, ...]:
    """The AWS services the functions in the subnets call through an interface endpoint."""
    return ("secretsmanager", *(("xray",) if tracing else ()))


class VpcEndpoints(Construct):
    """An S3 gateway endpoint on ``route_table_ids`` and one interface endpoint per service the functions call."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        network: DatabaseNetwork,
        route_table_ids: Sequence[str],
        tracing: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        self.gateway = ec2.CfnVPCEndpoint(
            self,
            "S3",
            vpc_id=network.vpc_id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=list(route_table_ids),
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "InterfaceEndpoints",
            vpc=vpc,
            description="HTTPS from the pipeline functions to the interface endpoints",
            allow_all_outbound=False,
        )
        for group_id in network.security_group_ids:
            self.security_group.add_ingress_rule(
                ec2.Peer.security_group_id(group_id), ec2.Port.tcp(HTTPS), f"HTTPS from the functions ({group_id})"
            )
        self.interfaces = {
            service: ec2.CfnVPCEndpoint(
                self,
                service.capitalize(),
                vpc_id=network.vpc_id,
                service_name=f"com.amazonaws.{region}.{service}",
                vpc_endpoint_type="Interface",
                subnet_ids=list(network.subnet_ids),
                security_group_ids=[self.security_group.security_group_id],
                private_dns_enabled=True,
            )
            for service in interface_services(tracing=tracing)
        }

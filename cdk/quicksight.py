"""QuickSight over the warehouse: a data source, one data set per query of ``analytics.datasets``, one dashboard.

Optional (QuickSight needs a subscription), built only when the context names a principal to share with. The
data source signs in with the warehouse secret itself (``Credentials.SecretArn``), so no credential is written into
the template; it finds the server by the ``warehouse_host``/``_dbname`` context values, else through CloudFormation
dynamic references to the same secret, and on ``warehouse_port`` (default 5432): CloudFormation resolves a dynamic
reference to a string, and the port is an integer property.
With the databases in a VPC, QuickSight reaches the warehouse through a VPC connection in the same subnets and
security groups as the load function. Data sets query the warehouse directly (no SPICE import), so the
dashboard, like the freshness data set, is always as new as the last load.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import SecretValue, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_quicksight as qs
from constructs import Construct

from analytics.datasets import DataSet
from cdk.config import DatabaseLocation, DatabaseNetwork
from cdk.nag import acknowledge, as_nag_prints

# What the shared principal may do: own the dashboard (view, change, share, publish versions, delete it), and use
# (not change or delete) the data sets and the data source, e.g. in analyses of their own.
DASHBOARD_OWNER_ACTIONS = (
    "quicksight:DescribeDashboard",
    "quicksight:ListDashboardVersions",
    "quicksight:QueryDashboard",
    "quicksight:UpdateDashboard",
    "quicksight:DeleteDashboard",
    "quicksight:DescribeDashboardPermissions",
    "quicksight:UpdateDashboardPermissions",
    "quicksight:UpdateDashboardPublishedVersion",
)
DEFAULT_PORT = 5432
DATA_SET_USER_ACTIONS = (
    "quicksight:DescribeDataSet",
    "quicksight:DescribeDataSetPermissions",
    "quicksight:PassDataSet",
    "quicksight:DescribeIngestion",
    "quicksight:ListIngestions",
)
DATA_SOURCE_USER_ACTIONS = (
    "quicksight:DescribeDataSource",
    "quicksight:DescribeDataSourcePermissions",
    "quicksight:PassDataSource",
)
# The dashboard's grid is 36 columns wide: two visuals side by side.
GRID_COLUMNS = 36
VISUAL_ROWS = 12


class WarehouseDashboard(Construct):
    """The QuickSight data source, data sets and dashboard of the warehouse, shared with one user or group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        data_sets: Sequence[DataSet],
        warehouse_secret_arn: str,
        principal_arn: str,
        network: DatabaseNetwork | None,
        location: DatabaseLocation | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        account = Stack.of(self).account
        location = location or DatabaseLocation()
        self.vpc_connection = self._vpc_connection(name_prefix, network) if network else None
        self.data_source = qs.CfnDataSource(
            self,
            "Warehouse",
            aws_account_id=account,
            data_source_id=f"{name_prefix}-warehouse",
            name=f"{name_prefix} warehouse",
            type="POSTGRESQL",
            data_source_parameters=qs.CfnDataSource.DataSourceParametersProperty(
                postgre_sql_parameters=qs.CfnDataSource.PostgreSqlParametersProperty(
                    host=location.host or _from_secret(warehouse_secret_arn, "host"),
                    port=location.port or DEFAULT_PORT,
                    database=location.dbname or _from_secret(warehouse_secret_arn, "dbname"),
                )
            ),
            credentials=qs.CfnDataSource.DataSourceCredentialsProperty(secret_arn=warehouse_secret_arn),
            ssl_properties=qs.CfnDataSource.SslPropertiesProperty(disable_ssl=False),
            vpc_connection_properties=(
                qs.CfnDataSource.VpcConnectionPropertiesProperty(vpc_connection_arn=self.vpc_connection.attr_arn)
                if self.vpc_connection
                else None
            ),
            permissions=[
                qs.CfnDataSource.ResourcePermissionProperty(
                    principal=principal_arn, actions=list(DATA_SOURCE_USER_ACTIONS)
                )
            ],
        )
        self.data_sets = {data_set.name: self._data_set(name_prefix, data_set, principal_arn) for data_set in data_sets}
        self.dashboard = qs.CfnDashboard(
            self,
            "Dashboard",
            aws_account_id=account,
            dashboard_id=f"{name_prefix}-warehouse",
            name=f"{name_prefix}: how the business is going",
            definition=qs.CfnDashboard.DashboardVersionDefinitionProperty(
                data_set_identifier_declarations=[
                    qs.CfnDashboard.DataSetIdentifierDeclarationProperty(
                        identifier=name, data_set_arn=cfn_data_set.attr_arn
                    )
                    for name, cfn_data_set in self.data_sets.items()
                ],
                sheets=[
                    qs.CfnDashboard.SheetDefinitionProperty(
                        sheet_id="overview",
                        name="Overview",
                        visuals=[_bar_chart(data_set) for data_set in data_sets],
                        layouts=[_grid([_visual_id(data_set) for data_set in data_sets])],
                    )
                ],
            ),
            permissions=[
                qs.CfnDashboard.ResourcePermissionProperty(
                    principal=principal_arn, actions=list(DASHBOARD_OWNER_ACTIONS)
                )
            ],
        )

    def _data_set(self, name_prefix: str, data_set: DataSet, principal_arn: str) -> qs.CfnDataSet:
        return qs.CfnDataSet(
            self,
            f"DataSet-{data_set.name}",
            aws_account_id=Stack.of(self).account,
            data_set_id=f"{name_prefix}-{data_set.name}",
            name=data_set.title,
            import_mode="DIRECT_QUERY",
            physical_table_map={
                _physical_table_id(data_set): qs.CfnDataSet.PhysicalTableProperty(
                    custom_sql=qs.CfnDataSet.CustomSqlProperty(
                        data_source_arn=self.data_source.attr_arn,
                        name=data_set.name,
                        sql_query=data_set.sql.strip(),
                        columns=[
                            qs.CfnDataSet.InputColumnProperty(name=column.name, type=column.type)
                            for column in data_set.columns
                        ],
                    )
                )
            },
            permissions=[
                qs.CfnDataSet.ResourcePermissionProperty(principal=principal_arn, actions=list(DATA_SET_USER_ACTIONS))
            ],
        )

    def _vpc_connection(self, name_prefix: str, network: DatabaseNetwork) -> qs.CfnVPCConnection:
        """QuickSight's network interfaces in the databases' subnets, created through a role it assumes."""
        stack = Stack.of(self)
        interfaces = stack.format_arn(service="ec2", resource="network-interface", resource_name="*")
        role = iam.Role(
            self,
            "VpcConnectionRole",
            assumed_by=iam.ServicePrincipal("quicksight.amazonaws.com"),
            description="Lets QuickSight place its network interfaces in the warehouse's subnets",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["ec2:CreateNetworkInterface"],
                resources=[
                    interfaces,
                    *(
                        stack.format_arn(service="ec2", resource="subnet", resource_name=subnet)
                        for subnet in network.subnet_ids
                    ),
                    *(
                        stack.format_arn(service="ec2", resource="security-group", resource_name=group)
                        for group in network.security_group_ids
                    ),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["ec2:ModifyNetworkInterfaceAttribute", "ec2:DeleteNetworkInterface"],
                resources=[interfaces],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"], resources=["*"])
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{as_nag_prints(stack, interfaces)}]",
            reason="QuickSight names the network interfaces it creates for the VPC connection itself, so their "
            "ids cannot be known in advance; creation is also limited to the given subnets and security groups.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            reason="ec2:DescribeSubnets and ec2:DescribeSecurityGroups support no resource-level permissions; "
            "they only read the network settings QuickSight checks before creating its interfaces.",
        )
        connection = qs.CfnVPCConnection(
            self,
            "VpcConnection",
            aws_account_id=stack.account,
            vpc_connection_id=f"{name_prefix}-warehouse",
            name=f"{name_prefix} warehouse",
            role_arn=role.role_arn,
            subnet_ids=list(network.subnet_ids),
            security_group_ids=list(network.security_group_ids),
        )
        # QuickSight uses the role as the connection is created: after the role's policy (DependsOn), not just
        # after the role its ARN refers to.
        connection.node.add_dependency(role.node.find_child("DefaultPolicy"))
        return connection


def _from_secret(secret_arn: str, field: str) -> str:
    """A CloudFormation dynamic reference to one field of the secret, resolved at deploy, never stored."""
    return SecretValue.secrets_manager(secret_arn, json_field=field).unsafe_unwrap()


def _physical_table_id(data_set: DataSet) -> str:
    """QuickSight's table ids take letters, digits and hyphens only."""
    return data_set.name.replace("_", "-")


def _visual_id(data_set: DataSet) -> str:
    return f"visual-{data_set.name}"


def _column(data_set: DataSet, name: str) -> qs.CfnDashboard.ColumnIdentifierProperty:
    return qs.CfnDashboard.ColumnIdentifierProperty(data_set_identifier=data_set.name, column_name=name)


def _dimension(data_set: DataSet, name: str) -> qs.CfnDashboard.DimensionFieldProperty:
    (column,) = [c for c in data_set.columns if c.name == name]
    field_id = f"{data_set.name}.{name}"
    if column.type == "DATETIME":
        return qs.CfnDashboard.DimensionFieldProperty(
            date_dimension_field=qs.CfnDashboard.DateDimensionFieldProperty(
                field_id=field_id, column=_column(data_set, name), date_granularity="MONTH"
            )
        )
    return qs.CfnDashboard.DimensionFieldProperty(
        categorical_dimension_field=qs.CfnDashboard.CategoricalDimensionFieldProperty(
            field_id=field_id, column=_column(data_set, name)
        )
    )


def _bar_chart(data_set: DataSet) -> qs.CfnDashboard.VisualProperty:
    """The data set's chart as in the local dashboard: ``y`` summed per ``x``, split by ``colour``."""
    chart = data_set.chart
    value_id = f"{data_set.name}.{chart.y}"
    return qs.CfnDashboard.VisualProperty(
        bar_chart_visual=qs.CfnDashboard.BarChartVisualProperty(
            visual_id=_visual_id(data_set),
            title=qs.CfnDashboard.VisualTitleLabelOptionsProperty(
                visibility="VISIBLE",
                format_text=qs.CfnDashboard.ShortFormatTextProperty(plain_text=data_set.title),
            ),
            subtitle=qs.CfnDashboard.VisualSubtitleLabelOptionsProperty(
                visibility="VISIBLE",
                format_text=qs.CfnDashboard.LongFormatTextProperty(plain_text=data_set.description),
            ),
            chart_configuration=qs.CfnDashboard.BarChartConfigurationProperty(
                orientation="HORIZONTAL" if chart.horizontal else "VERTICAL",
                bars_arrangement="STACKED" if chart.colour and chart.y.startswith("units") else "CLUSTERED",
                field_wells=qs.CfnDashboard.BarChartFieldWellsProperty(
                    bar_chart_aggregated_field_wells=qs.CfnDashboard.BarChartAggregatedFieldWellsProperty(
                        category=[_dimension(data_set, chart.x)],
                        values=[
                            qs.CfnDashboard.MeasureFieldProperty(
                                numerical_measure_field=qs.CfnDashboard.NumericalMeasureFieldProperty(
                                    field_id=value_id,
                                    column=_column(data_set, chart.y),
                                    aggregation_function=qs.CfnDashboard.NumericalAggregationFunctionProperty(
                                        simple_numerical_aggregation="SUM"
                                    ),
                                )
                            )
                        ],
                        colors=[_dimension(data_set, chart.colour)] if chart.colour else None,
                    )
                ),
                sort_configuration=(
                    qs.CfnDashboard.BarChartSortConfigurationProperty(
                        category_sort=[
                            qs.CfnDashboard.FieldSortOptionsProperty(
                                field_sort=qs.CfnDashboard.FieldSortProperty(field_id=value_id, direction="DESC")
                            )
                        ]
                    )
                    if chart.horizontal
                    else None
                ),
            ),
        )
    )


def _grid(visual_ids: Sequence[str]) -> qs.CfnDashboard.LayoutProperty:
    half = GRID_COLUMNS // 2
    return qs.CfnDashboard.LayoutProperty(
        configuration=qs.CfnDashboard.LayoutConfigurationProperty(
            grid_layout=qs.CfnDashboard.GridLayoutConfigurationProperty(
                elements=[
                    qs.CfnDashboard.GridLayoutElementProperty(
                        element_id=visual_id,
                        element_type="VISUAL",
                        column_index=(index % 2) * half,
                        column_span=half,
                        row_index=(index // 2) * VISUAL_ROWS,
                        row_span=VISUAL_ROWS,
                    )
                    for index, visual_id in enumerate(visual_ids)
                ]
            )
        )
    )

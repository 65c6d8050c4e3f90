"""The five functions: runtime, layers, sizes, concurrency, environment, networking, tracing and logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdk.functions import STAGES, VPC_ACCESS_ACTIONS
from cdk.stack import DEFINITION_FILE, lease_ttl_seconds
from lambdas.common.settings import FUNCTION_SETTINGS
from lambdas.extract.signal import MAX_AGE_ENV as SIGNAL_MAX_AGE_ENV
from lambdas.load.held import STUCK_AFTER_ENV
from tests.cdk.support import HANDLERS, VARIANT_CONTEXT, Synthesized, as_list


def layer_descriptions(synth: Synthesized, logical: str) -> list[str]:
    return [synth.properties(layer["Ref"])["Description"] for layer in synth.properties(logical)["Layers"]]


def test_five_functions_with_handlers_runtime_layers_and_tracing(synthesized: Synthesized) -> None:
    synthesized.template.resource_count_is("AWS::Lambda::Function", 5)
    assert tuple(synthesized.function_ids()) == STAGES
    assert tuple(synthesized.stack.functions.by_stage) == STAGES
    for stage, logical in synthesized.function_ids().items():
        properties = synthesized.properties(logical)
        assert properties["Handler"] == HANDLERS[stage]
        assert properties["Runtime"] == "python3.14"
        assert properties["Architectures"] == ["x86_64"]
        # Both layers are built by this stack from the pinned wheels; the report and the lease need no pyarrow.
        layers = [description.split(":")[0] for description in layer_descriptions(synthesized, logical)]
        expected = ["Powertools for AWS Lambda with its X-Ray tracer"]
        if stage not in ("report", "lease"):
            expected.insert(0, "Apache Arrow (pyarrow) without Flight, headers and tests")
        assert layers == expected, stage
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert properties["LoggingConfig"]["LogGroup"]["Ref"] in synthesized.resources("AWS::Logs::LogGroup")


def test_functions_have_stage_sized_memory_and_timeouts(synthesized: Synthesized) -> None:
    sizes = {
        stage: (synthesized.properties(logical)["MemorySize"], synthesized.properties(logical)["Timeout"])
        for stage, logical in synthesized.function_ids().items()
    }

    assert sizes == {
        "extract": (1024, 300),
        "transform": (2048, 600),
        "load": (1024, 600),
        "report": (256, 60),
        "lease": (256, 60),
    }


def test_no_function_reserves_concurrency_unless_the_context_asks_for_extract(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    # A new account's concurrency quota is 10, and Lambda keeps 10 unreserved: any reservation fails the stack there.
    for stack, extract in ((synthesized, None), (variant, 2)):  # the variant: reserve_extract_concurrency=true
        reserved = {
            stage: stack.properties(logical).get("ReservedConcurrentExecutions")
            for stage, logical in stack.function_ids().items()
        }
        assert reserved == {"extract": extract, "transform": None, "load": None, "report": None, "lease": None}


def test_where_the_databases_are_reaches_the_functions_that_read_their_secrets(variant: Synthesized) -> None:
    ids = variant.function_ids()
    extract = variant.properties(ids["extract"])["Environment"]["Variables"]
    load = variant.properties(ids["load"])["Environment"]["Variables"]
    assert {k: v for k, v in extract.items() if k.startswith("DATABASE_")} == {
        "DATABASE_HOST": VARIANT_CONTEXT["totesys_host"],
        "DATABASE_NAME": VARIANT_CONTEXT["totesys_dbname"],
    }
    assert {k: v for k, v in load.items() if k.startswith("DATABASE_")} == {
        "DATABASE_HOST": VARIANT_CONTEXT["warehouse_host"],
        "DATABASE_PORT": str(VARIANT_CONTEXT["warehouse_port"]),
        "DATABASE_NAME": VARIANT_CONTEXT["warehouse_dbname"],
    }
    for stage in ("transform", "report", "lease"):
        assert not [k for k in variant.properties(ids[stage])["Environment"]["Variables"] if k.startswith("DATABASE_")]


def test_function_environment_variables(synthesized: Synthesized) -> None:
    ids = synthesized.function_ids()
    buckets = synthesized.bucket_ids()
    common = {
        "INGESTION_BUCKET": {"Ref": buckets["ingestion"]},
        "PROCESSED_BUCKET": {"Ref": buckets["processed"]},
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    expected = {
        "extract": {
            **common,
            "POWERTOOLS_SERVICE_NAME": "totesys-extract",
            "TOTESYS_SECRET_ID": "totesys/source",
            "EXTRACT_LOOKBACK_SECONDS": "900",
            "EXTRACT_SIGNAL_MAX_AGE_SECONDS": "3600",
            "EXTRACT_PARTITION_ROWS": "1500000",
            "POWERTOOLS_METRICS_NAMESPACE": "TotesysEtl",
        },
        "transform": {**common, "POWERTOOLS_SERVICE_NAME": "totesys-transform"},
        "load": {  # the processed bucket only: the load reads nothing of the ingestion bucket
            "PROCESSED_BUCKET": {"Ref": buckets["processed"]},
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_SERVICE_NAME": "totesys-load",
            "POWERTOOLS_METRICS_NAMESPACE": "TotesysEtl",
            "WAREHOUSE_SECRET_ID": "totesys/warehouse",
            "HELD_STUCK_AFTER_SECONDS": "86400",
        },
        "report": {
            "ALERT_TOPIC_ARN": {"Ref": synthesized.topic_id()},
            "INGESTION_BUCKET": {"Ref": buckets["ingestion"]},  # the run lease it releases
            "POWERTOOLS_METRICS_NAMESPACE": "TotesysEtl",
            "POWERTOOLS_SERVICE_NAME": "totesys-report",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        },
        "lease": {
            "INGESTION_BUCKET": {"Ref": buckets["ingestion"]},
            "LEASE_TTL_SECONDS": "3900",
            "POWERTOOLS_SERVICE_NAME": "totesys-lease",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        },
    }
    for stage, logical in ids.items():
        assert synthesized.properties(logical)["Environment"]["Variables"] == expected[stage], stage


def test_each_function_is_deployed_with_what_its_settings_model_reads(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    # The template sets no variable that the function's model does not read, leaves unset none that the model
    # requires, and sets every one to a value the model accepts (a reference, resolved at deploy, as any text).
    for stack in (synthesized, variant):
        for stage, logical in stack.function_ids().items():
            variables = stack.properties(logical)["Environment"]["Variables"]
            model = FUNCTION_SETTINGS[stage]
            required = {str(field.alias) for field in model.model_fields.values() if field.is_required()}
            assert set(variables) <= set(model.variables()), stage
            assert required <= set(variables), stage
            resolved = {
                name: value if isinstance(value, str) else "resolved-at-deploy" for name, value in variables.items()
            }
            assert model.from_environ(resolved).environment() == resolved, stage


def test_lease_outlives_the_longest_execution_by_five_minutes(synthesized: Synthesized, variant: Synthesized) -> None:
    timeout = json.loads(DEFINITION_FILE.read_text(encoding="utf-8"))["TimeoutSeconds"]
    for stack in (synthesized, variant):
        variables = stack.properties(stack.function_ids()["lease"])["Environment"]["Variables"]
        assert stack.stack.workflow.timeout_seconds == timeout
        assert variables["LEASE_TTL_SECONDS"] == str(timeout + 300)
    # Without a TimeoutSeconds an execution may run for a year: the lease must not expire under it.
    assert lease_ttl_seconds(None) == 365 * 24 * 3600 + 300


def test_extract_lookback_comes_from_the_context(variant: Synthesized) -> None:
    variables = variant.properties(variant.function_ids()["extract"])["Environment"]["Variables"]
    assert variables["EXTRACT_LOOKBACK_SECONDS"] == "600"
    assert variables[SIGNAL_MAX_AGE_ENV] == "0"  # 0: every run scans


def test_extract_partition_rows_comes_from_the_context(variant: Synthesized) -> None:
    variables = variant.properties(variant.function_ids()["extract"])["Environment"]["Variables"]
    assert variables["EXTRACT_PARTITION_ROWS"] == "0"  # 0: whole-table reads are never split


def test_the_age_at_which_held_fact_rows_are_stuck_comes_from_the_context(variant: Synthesized) -> None:
    variables = variant.properties(variant.function_ids()["load"])["Environment"]["Variables"]
    assert variables[STUCK_AFTER_ENV] == "7200"


def test_function_log_groups_keep_logs_for_the_configured_retention(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    for stack, days in ((synthesized, 30), (variant, 90)):
        log_groups = stack.resources("AWS::Logs::LogGroup")
        assert len(log_groups) == 8, "one per function and one per state machine (the parent and its two children)"
        for log_group in log_groups.values():
            assert log_group["Properties"]["RetentionInDays"] == days


def test_no_function_runs_in_a_vpc_by_default(synthesized: Synthesized) -> None:
    for stage, logical in synthesized.function_ids().items():
        assert "VpcConfig" not in synthesized.properties(logical), stage
        ec2 = [s for s in synthesized.function_statements(logical) if "ec2:" in str(s["Action"])]
        assert ec2 == [], stage


def test_extract_and_load_run_in_the_database_subnets_when_given(variant: Synthesized) -> None:
    for stage, logical in variant.function_ids().items():
        properties = variant.properties(logical)
        ec2 = [s for s in variant.function_statements(logical) if "ec2:" in str(s["Action"])]
        if stage in ("extract", "load"):
            assert properties["VpcConfig"] == {
                "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                "SecurityGroupIds": ["sg-0123456789abcdef0"],
            }
            assert ec2 == [{"Action": sorted(VPC_ACCESS_ACTIONS), "Effect": "Allow", "Resource": "*"}]
            # Lambda checks the network permissions when it creates the function.
            depends_on = variant.resources_json[logical]["DependsOn"]
            policies = [d for d in depends_on if variant.resources_json[d]["Type"] == "AWS::IAM::Policy"]
            assert any("ec2:CreateNetworkInterface" in json.dumps(variant.properties(p)) for p in policies)
        else:
            assert "VpcConfig" not in properties, stage
            assert ec2 == [], stage
    # Imported by id: no VPC, subnet or security group of the functions is created, and no lookup is needed (the
    # one security group is the VPC endpoints' own: vpc_endpoints=true here).
    for resource_type in ("AWS::EC2::VPC", "AWS::EC2::Subnet"):
        variant.template.resource_count_is(resource_type, 0)
    groups = [r["Properties"]["GroupDescription"] for r in variant.resources("AWS::EC2::SecurityGroup").values()]
    assert groups == ["HTTPS from the pipeline functions to the interface endpoints"]


def test_tracing_can_be_switched_off(variant: Synthesized) -> None:
    for stage, logical in variant.function_ids().items():
        assert "TracingConfig" not in variant.properties(logical), stage
        xray = [s for s in variant.function_statements(logical) if "xray:" in str(as_list(s["Action"]))]
        assert xray == [], stage


def test_the_database_functions_verify_tls_against_the_ca_bundle_the_deployment_provides(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    bundle = Path(VARIANT_CONTEXT["database_ca_bundle"]).read_text(encoding="ascii")
    for stage, logical in variant.function_ids().items():
        variables = variant.properties(logical)["Environment"]["Variables"]
        expected = "/var/task/database-ca-bundle.pem" if stage in ("extract", "load") else None
        assert variables.get("PGSSLROOTCERT") == expected, stage
    for stage in ("extract", "load"):  # extract has a code asset of its own (its native wheels), load the shared one
        key = variant.properties(variant.function_ids()[stage])["Code"]["S3Key"].removesuffix(".zip")
        assert (variant.outdir / f"asset.{key}" / "database-ca-bundle.pem").read_text(encoding="ascii") == bundle
    shipped = list(variant.outdir.glob("asset.*/database-ca-bundle.pem"))
    assert [p.read_text(encoding="ascii") for p in shipped] == [bundle] * 2  # in the two code assets
    for logical in synthesized.function_ids().values():  # database_ca_bundle=runtime: the runtime's trusted CAs
        assert "PGSSLROOTCERT" not in synthesized.properties(logical)["Environment"]["Variables"]


def test_a_ca_bundle_that_is_not_a_pem_certificate_is_refused(tmp_path: Path) -> None:
    from cdk.config import ConfigError, PipelineConfig

    not_pem = tmp_path / "bundle.pem"
    not_pem.write_text("hello")
    for value, message in ((str(not_pem), "holds no PEM certificate"), (str(tmp_path / "none"), "not a readable")):
        with pytest.raises(ConfigError, match=message):
            PipelineConfig.from_context({"database_ca_bundle": value}.get)

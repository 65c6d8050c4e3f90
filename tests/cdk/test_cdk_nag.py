"""The cdk-nag verdict: AwsSolutions and Serverless both pass, with granular, reasoned, used acknowledgements."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from cdk.nag import acknowledge
from tests.cdk.support import Synthesized

PACKS = ("AwsSolutions", "Serverless")


@pytest.mark.parametrize("pack", PACKS)
def test_both_rule_packs_pass_with_only_reasoned_granular_acknowledgements(
    synthesized: Synthesized, variant: Synthesized, pack: str
) -> None:
    # The fixtures' app.synth() raises on any unacknowledged finding; the report says the same.
    for stack in (synthesized, variant):
        report = stack.plugin_report(pack)
        assert report["conclusion"] == "success"
        assert report["violations"] == []
        for suppressed in report["suppressedViolations"]:
            acknowledged = suppressed["acknowledgedId"]
            assert len(suppressed["reason"]) > 40, acknowledged
            assert acknowledged.startswith(f"{pack}::{pack}-"), acknowledged
            if "IAM5" in acknowledged:
                assert acknowledged.endswith("]") and "[Resource::" in acknowledged, "IAM5 is acknowledged per resource"


_PLACED: dict[int, set[tuple[str, str]]] = {}


def placed_acknowledgements(stack: Synthesized) -> set[tuple[str, str]]:
    """(construct path, acknowledged id) of every acknowledgement in the stack (walking it is slow: cached)."""
    if id(stack) not in _PLACED:
        key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        _PLACED[id(stack)] = {
            (construct.node.path, finding)
            for construct in stack.stack.node.find_all()
            for entry in construct.node.metadata
            if entry.type == key
            for finding in entry.data
        }
    return _PLACED[id(stack)]


def test_every_acknowledgement_matches_a_finding_on_its_construct(
    synthesized: Synthesized, variant: Synthesized
) -> None:
    for stack in (synthesized, variant):
        placed = {
            (path, finding) for path, finding in placed_acknowledgements(stack) if finding.split("::")[0] in PACKS
        }
        used = {
            (s["acknowledgedAt"], s["acknowledgedId"])
            for pack in PACKS
            for s in stack.plugin_report(pack)["suppressedViolations"]
        }
        assert placed, "the stack acknowledges some findings"
        assert placed == used, f"unused: {sorted(placed - used)}; unplaced: {sorted(used - placed)}"


def test_no_acknowledgement_covers_a_whole_pack_or_stack(synthesized: Synthesized, variant: Synthesized) -> None:
    for stack in (synthesized, variant):
        for path, finding in placed_acknowledgements(stack):
            assert path != stack.stack.node.path, "no stack-wide acknowledgement"
            assert finding.count("::") >= 1 and not finding.endswith("::"), finding


def test_synth_warnings_are_only_the_expected_ones(synthesized: Synthesized, variant: Synthesized) -> None:
    def warnings(stack: Synthesized) -> list[str]:
        return [
            v["ruleName"]
            for report in stack.validation_report()["pluginReports"]
            for v in report["violations"]
            if v["severity"] == "warning"
        ]

    assert warnings(synthesized) == []
    # The VPC import warnings are acknowledged next to the imports; max_source_connections=2 is worth a warning.
    assert warnings(variant) == ["Annotation::totesys:source-connections"]


def test_acknowledge_refuses_unknown_packs_and_empty_reasons(tmp_path: Path) -> None:
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path)), "Probe")
    with pytest.raises(ValueError, match="is not a rule id"):
        acknowledge(stack, "IAM5", reason="a long enough reason for the check")
    with pytest.raises(ValueError, match="needs a real reason"):
        acknowledge(stack, "AwsSolutions-S1", reason="because")


def test_an_unacknowledged_finding_fails_the_synth(tmp_path: Path) -> None:
    # How cdk-nag v3 reports failures in Python: app.synth() raises once the plugin has listed them.
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe", env=cdk.Environment(region="eu-west-2"))
    s3.Bucket(stack, "NoAccessLogs", enforce_ssl=True)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))

    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    assert "AwsSolutions::AwsSolutions-S1" in str(raised.value)
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert "AwsSolutions-S1" in [v["ruleName"] for r in report["pluginReports"] for v in r["violations"]]

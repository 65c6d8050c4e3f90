"""The synthesized templates as CloudFormation itself would read them: cfn-lint's errors are deploy failures
(an unknown property, a wrong type, a reference to nothing), found offline.

CDK ships the state machine's definition as an asset, so cfn-lint cannot see it; tests/test_definition.py checks
that file. Warnings and informational findings are not failures here, errors are.
"""

from __future__ import annotations

import json

import pytest
from cfnlint.api import ManualArgs, lint

from tests.cdk.support import Synthesized


@pytest.mark.parametrize("shape", ["synthesized", "variant"])
def test_the_template_has_no_cloudformation_error(shape: str, request: pytest.FixtureRequest) -> None:
    synthesized: Synthesized = request.getfixturevalue(shape)
    found = lint(json.dumps(synthesized.template_json), config=ManualArgs(regions=["eu-west-2"]))

    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in found if m.rule.id.startswith("E")]
    assert errors == []


def test_cfn_lint_finds_an_error_in_a_broken_template(synthesized: Synthesized) -> None:
    """The check can fail: an unknown property on the state machine is an error."""
    broken = json.loads(json.dumps(synthesized.template_json))
    logical, _ = synthesized.state_machine()
    broken["Resources"][logical]["Properties"]["NoSuchProperty"] = 1
    found = lint(json.dumps(broken), config=ManualArgs(regions=["eu-west-2"]))

    assert any(m.rule.id.startswith("E") for m in found)

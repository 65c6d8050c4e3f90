"""One synthesis of the real app (cdk.json context, AWS Solutions checks on) shared by the CDK tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cdk.support import Synthesized, cdk_json_context, synthesize


@pytest.fixture(scope="session")
def context() -> dict[str, Any]:
    return cdk_json_context()


@pytest.fixture(scope="session")
def synthesized(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(context, tmp_path_factory.mktemp("cdk.out"))

"""Two syntheses of the real app, shared by the CDK tests (the cdk-nag packs run in both).

``synthesized``: the cdk.json defaults. ``variant``: every optional setting at once (e-mail subscriptions, a
VPC, a table list, a cron schedule, tracing off, lake expiry...), see ``support.VARIANT_CONTEXT``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cdk.support import PLAIN_CONTEXT, VARIANT_CONTEXT, Synthesized, cdk_json_context, synthesize


@pytest.fixture(scope="session")
def context() -> dict[str, Any]:
    return cdk_json_context()


@pytest.fixture(scope="session")
def synthesized(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize({**context, **PLAIN_CONTEXT}, tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def variant(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize({**context, **VARIANT_CONTEXT}, tmp_path_factory.mktemp("cdk.out.variant"))

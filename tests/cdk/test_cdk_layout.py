"""One source for the lake's layout: the IAM grants and lifecycle rules are derived from lambdas.common.keys.

Renaming a prefix there must rename it in what `cdk deploy` creates; a key pattern spelled by hand in the stack
would keep the old name, and every head read in AWS would be AccessDenied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lambdas.common import keys
from lambdas.common.tables import FACTS, SOURCE_TABLES
from tests.cdk.support import PLAIN_CONTEXT, object_patterns, synthesize


def test_renaming_the_lake_prefixes_renames_the_synthesized_grants_and_lifecycle_rules(
    context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "STATE_PREFIX", "_heads-v2")
    monkeypatch.setattr(keys, "CURRENT_PREFIX", "_snapshots-v2")
    monkeypatch.setattr(keys, "HELD_PREFIX", "_waiting-v2")
    monkeypatch.setattr(keys, "RECONCILE_STAGE", "compare-v2")

    renamed = synthesize({**context, **PLAIN_CONTEXT}, tmp_path / "cdk.out")

    text = json.dumps(renamed.resources_json)
    for old in ("_state/", "_current/", "_held/", "_reconcile/", "/reconcile/"):
        assert old not in text, f"{old} is still spelled in the synthesized stack"
    ids, buckets = renamed.function_ids(), renamed.bucket_ids()
    extract = object_patterns(renamed.function_statements(ids["extract"]), buckets["ingestion"])
    transform = object_patterns(renamed.function_statements(ids["transform"]), buckets["processed"])
    load = object_patterns(renamed.function_statements(ids["load"]), buckets["processed"])
    lease = object_patterns(renamed.function_statements(ids["lease"]), buckets["ingestion"])
    assert "_heads-v2/extract/staff.json" in extract
    assert "_heads-v2/compare-v2/staff.json" in extract
    assert {f"_compare-v2/{table}/*" for table in SOURCE_TABLES} <= set(extract)
    assert "_snapshots-v2/*" in transform
    assert {f"_waiting-v2/{fact}/*" for fact in FACTS} <= set(load)
    assert set(lease) == {"", "_heads-v2/run-lease.json"}
    rules = {
        rule["Prefix"]
        for bucket in ("ingestion", "processed")
        for rule in renamed.properties(buckets[bucket])["LifecycleConfiguration"]["Rules"]
        if "Prefix" in rule
    }
    assert {"_heads-v2/", "_snapshots-v2/"} <= rules

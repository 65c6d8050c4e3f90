"""The single source of the workflow: `pipeline.asl.json` and its `${...}` placeholders.

CDK substitutes the placeholders with `definition_substitutions`; the local runner substitutes them here
with the ARNs of the functions it created in moto. Both execute the same file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ASL_PATH = Path(__file__).with_name("pipeline.asl.json")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def placeholders(text: str | None = None) -> set[str]:
    """The names the definition expects to be substituted."""
    return set(_PLACEHOLDER.findall(ASL_PATH.read_text() if text is None else text))


def render(substitutions: Mapping[str, str]) -> str:
    """The definition with every placeholder replaced; a missing or unknown name is an error."""
    text = ASL_PATH.read_text()
    expected = placeholders(text)
    if set(substitutions) != expected:
        raise KeyError(f"substitutions {sorted(substitutions)} do not match placeholders {sorted(expected)}")
    return _PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], text)


def load(substitutions: Mapping[str, str] | None = None) -> dict[str, Any]:
    return json.loads(render(substitutions) if substitutions is not None else ASL_PATH.read_text())

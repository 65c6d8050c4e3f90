"""Local executions outlive their moto: each run's input, status and history are kept in the lake directory,
so `python -m statemachine.rerun LOCAL_ID` can re-run what a local execution could not finish, as in AWS."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

EXECUTIONS_DIR = "executions"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def _path(lake_dir: Path, name: str) -> Path | None:
    return lake_dir / EXECUTIONS_DIR / f"{name}.json" if _NAME.fullmatch(name) else None


def save(lake_dir: Path, outcome: Any, execution_input: dict[str, Any], options: list[str]) -> Path:
    """Keep one execution: `options` are those a re-run repeats (never a password: see command_line)."""
    name = outcome.execution_arn.rsplit(":", 1)[-1]
    path = lake_dir / EXECUTIONS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"execution": name, "execution_arn": outcome.execution_arn, "status": outcome.status,
              "error": outcome.error, "input": execution_input, "options": options,
              "history": outcome.history}  # fmt: skip
    path.write_text(json.dumps(record, default=str, ensure_ascii=False), encoding="utf-8")
    return path


def load(lake_dir: Path, name: str) -> dict[str, Any] | None:
    """The kept execution called `name`, or None if this lake holds none by that name."""
    path = _path(lake_dir, name)
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None

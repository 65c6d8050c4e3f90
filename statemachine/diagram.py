"""Mermaid diagrams of the parent (`pipeline.asl.json`) and its child (`stages.asl.json`), so the docs show the
workflow that is deployed.

`python -m statemachine.diagram --write` regenerates docs/state-machine.md; a test fails when the file
no longer matches the definition.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from statemachine.definition import STAGES, load

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "state-machine.md"


def _id(prefix: str, name: str) -> str:
    return prefix + re.sub(r"\W+", "_", name).strip("_").lower()


def _label(text: str) -> str:
    return text.replace('"', "'")


def _node(node_id: str, name: str, state: dict[str, Any]) -> str:
    kind = state["Type"]
    if kind == "Choice":
        return f'{node_id}{{"{_label(name)}"}}'
    if kind in ("Succeed", "Fail"):
        return f'{node_id}(["{_label(name)}"])'
    if kind == "Wait":
        return f'{node_id}[/"{_label(name)}"/]'
    return f'{node_id}["{_label(name)}"]'


def _choice_label(rule: dict[str, Any]) -> str:
    variable = rule.get("Variable", "")
    for key, value in rule.items():
        if key not in ("Variable", "Next"):
            return f"{variable} {key} {value}".replace('"', "'")
    return variable


def _flow(states: dict[str, Any], prefix: str, indent: str) -> list[str]:
    lines: list[str] = []
    for name, state in states.items():
        node = _id(prefix, name)
        if state["Type"] == "Map":
            processor = state["ItemProcessor"]
            lines.append(f'{indent}subgraph {node}["{_label(name)} — one iteration per item of {state["ItemsPath"]}"]')
            lines.extend(_flow(processor["States"], node + "_", indent + "  "))
            lines.append(f"{indent}end")
        else:
            lines.append(f"{indent}{_node(node, name, state)}")
        for catch in state.get("Catch", []):
            lines.append(f'{indent}{node} -- "{" / ".join(catch["ErrorEquals"])}" --> {_id(prefix, catch["Next"])}')
        for rule in state.get("Choices", []):
            lines.append(f'{indent}{node} -- "{_choice_label(rule)}" --> {_id(prefix, rule["Next"])}')
        if "Default" in state:
            lines.append(f'{indent}{node} -- "otherwise" --> {_id(prefix, state["Default"])}')
        if "Next" in state:
            lines.append(f"{indent}{node} --> {_id(prefix, state['Next'])}")
    return lines


def mermaid(definition: dict[str, Any] | None = None) -> str:
    definition = definition or load()
    lines = ["flowchart TD", f"  start((start)) --> {_id('s_', definition['StartAt'])}"]
    lines.extend(_flow(definition["States"], "s_", "  "))
    return "\n".join(lines)


def markdown(definition: dict[str, Any] | None = None, stages: dict[str, Any] | None = None) -> str:
    definition = definition or load()
    stages = stages or load(name=STAGES)
    retries = sorted({e for d in (definition, stages) for s in _tasks(d) for r in s.get("Retry", [])
                      for e in r["ErrorEquals"] if not e.startswith("StepFunctions.")})  # fmt: skip
    return "\n".join(
        [
            "# The state machine",
            "",
            "Generated from `statemachine/pipeline.asl.json` and `statemachine/stages.asl.json` (which",
            "`python -m statemachine.definition --write` builds) by `python -m statemachine.diagram --write`;",
            "a test fails when this page no longer matches the definitions. Do not edit by hand.",
            "",
            "## The run (Standard): lease, plan, the tables' work, report",
            "",
            "The schedule starts it every 5 minutes; its execution graph, history and redrive are in the console.",
            "",
            "```mermaid",
            mermaid(definition),
            "```",
            "",
            "## The tables' work: the child workflow, deployed as Express and as Standard",
            "",
            "The parent starts one of the two with `states:startExecution.sync:2` and receives its per-table results",
            "(`extracted`, `transformed`, `loaded_dimensions`, `loaded_facts`), which the report and",
            "`python -m statemachine.rerun` read from the parent's history. The plan chooses: Express for an",
            "incremental run (billed per request and GB-second, not per state; its graph is in the log group",
            "`/aws/vendedlogs/states/<stack>-express`, which keeps every error with its data), Standard for a first",
            "load, a full refresh, a repair or reconciliation, a re-run, a plan that failed, or an Express run",
            "that did not finish (its console graph and redrive as the parent's).",
            "",
            "What people still get, with the tables' work in a child:",
            "",
            "- **the console's graph**: the parent's, for every run (lease, plan, which child, report); the Standard",
            "  child's, linked from the parent's task, with every table's extract, transform and load; an Express",
            "  child's is the events its log group keeps (`LogLevel.ERROR`: each failed table, a timeout, with data),",
            "  and every table's result is in the parent's history, as the output of the child's task;",
            "- **re-runs**: `python -m statemachine.rerun EXECUTION_ARN` reads the failed tables from the parent's",
            "  history (it needs no child's) and starts a run of only those, in the Standard child;",
            "- **redrive**: of the parent, for a run that failed before its report (the child's task retries nothing",
            "  that may have started a child); of a Standard child, as of any Standard execution. An Express child",
            "  cannot be redriven: the parent itself does its work again in the Standard child when it fails or",
            "  passes its five minutes, after a 15-minute wait that keeps the lease until the invocations the",
            "  Express child started have ended (Lambda's own limit), so no run overlaps them.",
            "",
            "```mermaid",
            mermaid(stages),
            "```",
            "",
            f"Execution timeout: {definition.get('TimeoutSeconds', 'none')} s for the whole run. Every Lambda task "
            f"retries with exponential backoff and full jitter on: {', '.join(retries)} (one policy, "
            "`statemachine/definition.py`: `retry_policy`). Any other error is caught per table: the table "
            "is reported as failed, tables that depend on it are skipped, and the run ends FAILED after the report.",
            "",
            "What the states do (their `Comment`s):",
            "",
            *_comments(definition["States"], ""),
            *_comments(stages["States"], ""),
            "",
        ]
    )


def _comments(states: dict[str, Any], indent: str) -> list[str]:
    """A list of the states that explain themselves, nested as the Maps nest them."""
    lines = []
    for name, state in states.items():
        if state.get("Comment"):
            lines.append(f"{indent}- **{name}**: {state['Comment']}")
        if state["Type"] == "Map":
            lines.extend(_comments(state["ItemProcessor"]["States"], indent + "  "))
    return lines


def _tasks(definition: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for state in definition["States"].values():
        if state["Type"] == "Task":
            found.append(state)
        if state["Type"] == "Map":
            found.extend(_tasks(state["ItemProcessor"]))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m statemachine.diagram", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH.relative_to(DOC_PATH.parents[1])}")
    args = parser.parse_args(argv)
    if args.write:
        DOC_PATH.parent.mkdir(exist_ok=True)
        DOC_PATH.write_text(markdown())
    else:
        print(markdown())


if __name__ == "__main__":
    main()

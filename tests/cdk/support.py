"""Building and synthesizing the real app for the CDK tests, as app.py and the CDK CLI do."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import cx_api
from aws_cdk.assertions import Template

from app import build_app
from cdk.stack import PipelineStack

REPO_ROOT = Path(__file__).resolve().parents[2]


def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]


@dataclass(frozen=True)
class Synthesized:
    stack: PipelineStack
    assembly: cx_api.CloudAssembly
    template: Template
    template_json: dict[str, Any]
    outdir: Path

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template_json["Resources"].items()
            if resource["Type"] == resource_type
        }

    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.outdir / "validation-report.json").read_text(encoding="utf-8"))


def synthesize(context: dict[str, Any], outdir: Path) -> Synthesized:
    """Build the app as app.py does and synthesize it; cdk-nag findings make ``app.synth()`` raise."""
    app = cdk.App(context=context, outdir=str(outdir))
    stack = build_app(app)
    assembly = app.synth()
    template_json = assembly.get_stack_by_name(stack.stack_name).template
    return Synthesized(stack, assembly, Template.from_json(template_json), template_json, outdir)

#!/usr/bin/env python3
"""CDK app of the totesys ETL pipeline: `npx cdk synth` (context from cdk.json) or `python app.py`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from cdk.config import ConfigError, PipelineConfig
from cdk.nag import add_rule_packs
from cdk.stack import PipelineStack


def build_app(app: cdk.App) -> PipelineStack:
    """Read and validate the configuration once from ``app``'s whole context, add the stack and the nag checks.

    The whole context, not one key at a time: a key of ours that the configuration does not know is refused.
    """
    config = PipelineConfig.from_context(app.node.get_all_context())
    stack = PipelineStack(app, config=config)
    add_rule_packs(app)
    return stack


def cdk_json_context() -> dict[str, Any]:
    """The defaults and feature flags of cdk.json.

    The CDK CLI passes them itself (and its own context, e.g. ``-c schedule=...``, takes precedence over what
    is given here); reading them too lets ``python app.py`` synthesize the same app without the CLI.
    """
    return json.loads((Path(__file__).with_name("cdk.json")).read_text(encoding="utf-8"))["context"]


def main() -> None:
    app = cdk.App(context=cdk_json_context())
    try:
        build_app(app)
    except ConfigError as error:
        sys.exit(str(error))
    app.synth()


if __name__ == "__main__":
    main()

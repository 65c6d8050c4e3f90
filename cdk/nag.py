"""cdk-nag v3 helpers: the two rule packs as policy-validation plugins, and granular acknowledgements."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import IConstruct

PACKS = ("AwsSolutions", "Serverless")


def add_rule_packs(app: App) -> None:
    """Check the whole app against the AWS Solutions and the Serverless packs; any finding fails the synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))


def acknowledge(construct: IConstruct, *findings: str, reason: str) -> None:
    """Acknowledge exact findings on one construct, with the reason a reader needs.

    ``findings`` are rule ids as cdk-nag reports them, with their granular part where there is one, e.g.
    ``"AwsSolutions-IAM5[Resource::*]"`` or ``"Serverless-LambdaDLQ"``; the plugin prefix
    (``AwsSolutions::``, ``Serverless::``) is added here.
    """
    if not findings:
        raise ValueError("name at least one finding to acknowledge")
    if len(reason.strip()) < 20:
        raise ValueError("an acknowledgement needs a real reason")
    for finding in findings:
        pack = finding.split("-", 1)[0]
        if pack not in PACKS or finding == pack:
            raise ValueError(f"{finding!r} is not a rule id of {' or '.join(PACKS)}")
        Validations.of(construct).acknowledge(Acknowledgment(id=f"{pack}::{finding}", reason=reason))


def acknowledge_warning(construct: IConstruct, warning_id: str, *, reason: str) -> None:
    """Acknowledge one CDK synth warning (an annotation such as '@aws-cdk/aws-ec2:noSubnetRouteTableId')."""
    if len(reason.strip()) < 20:
        raise ValueError("an acknowledgement needs a real reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=f"Annotation::{warning_id}", reason=reason))


def as_nag_prints(stack: Stack, value: str) -> str:
    """A string with pseudo-parameter tokens as cdk-nag prints it in a finding id, e.g. an ARN pattern
    'arn:aws:states:eu-west-2:<AWS::AccountId>:execution:TotesysEtl-pipeline:*'."""
    resolved = stack.resolve(value)
    parts = resolved["Fn::Join"][1] if isinstance(resolved, dict) else [resolved]
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and set(part) == {"Ref"}:
            texts.append(f"<{part['Ref']}>")
        else:
            raise ValueError(f"cannot render {part!r} as cdk-nag does")
    return "".join(texts)

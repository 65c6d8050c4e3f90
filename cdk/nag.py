"""cdk-nag v3 helpers: the AWS Solutions pack as a policy-validation plugin, and granular acknowledgements."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

PACK = "AwsSolutions"


def acknowledge(construct: IConstruct, *findings: str, reason: str) -> None:
    """Acknowledge exact AwsSolutions findings on one construct, with the reason a reader needs.

    ``findings`` are rule ids as cdk-nag reports them, with their granular part where there is one, e.g.
    ``"AwsSolutions-IAM5[Resource::*]"``; the ``AwsSolutions::`` plugin prefix is added here.
    """
    if not findings:
        raise ValueError("name at least one finding to acknowledge")
    if len(reason.strip()) < 20:
        raise ValueError("an acknowledgement needs a real reason")
    for finding in findings:
        if not finding.startswith(f"{PACK}-"):
            raise ValueError(f"{finding!r} is not an {PACK} rule id")
        Validations.of(construct).acknowledge(Acknowledgment(id=f"{PACK}::{finding}", reason=reason))

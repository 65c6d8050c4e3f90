"""The Lambda platform every function runs on, as plain names.

One place for the fact, read by the stack (`cdk.functions` turns it into CDK's runtime and architecture) and by the
wheel fetch (`cdk.wheels`), which must not import aws-cdk-lib: that starts jsii's Node, slow and, on Node 20, noisy.

The newest Python runtime this CDK release knows. The tests run on CPython 3.11 (no 3.12+ installs on the project's
machines), with the same distributions at the same versions (constraints-lambda.txt); python3.11 itself was
deprecated by Lambda on 2026-06-30, so it cannot be the runtime of a new stack (docs/deploy.md says what is proven).
"""

from __future__ import annotations

PYTHON_VERSION = "3.14"
RUNTIME_NAME = f"python{PYTHON_VERSION}"
ARCHITECTURE_NAME = "x86_64"  # Lambda's name; "arm64" is the other

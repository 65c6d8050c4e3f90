"""Local (Docker-free) bundling of the Lambda code and layer assets.

A code asset is the ``lambdas`` package plus the wheels of its distributions for the Lambda platform, unpacked
(cdk/wheels.py); a layer asset is wheels only, under ``python/`` (where Lambda puts a layer on ``sys.path``).
Nothing is imported from ``lambdas``: the files are only copied, so the bundle builds while that package is still
being written.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import jsii
from aws_cdk import BundlingOptions, ILocalBundling

from cdk.wheels import unpack

# Compiled or cached files never belong in the bundle: Lambda compiles what it needs.
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = frozenset({".pyc", ".pyo"})
# Where Lambda finds a Python layer's packages: /opt/python is on sys.path.
LAYER_PREFIX = "python"


def _wanted(relative: PurePosixPath) -> bool:
    return not (_SKIPPED_DIRS.intersection(relative.parts) or relative.suffix in _SKIPPED_SUFFIXES)


def copy_package(package_dir: Path, destination: Path) -> int:
    """Copy a source package directory tree, leaving out caches."""
    copied = 0
    for source in sorted(package_dir.rglob("*")):
        relative = PurePosixPath(source.relative_to(package_dir).as_posix())
        if source.is_dir() or not _wanted(relative):
            continue
        target = destination / package_dir.name / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    return copied


@jsii.implements(ILocalBundling)
class LocalPythonBundler:
    """Builds an asset in-process: a source package (code) and platform wheels, under ``prefix`` (layers)."""

    def __init__(self, *, wheels: Iterable[Path], package_dir: Path | None = None, prefix: str = "",
                 extra_files: dict[str, Path] | None = None) -> None:  # fmt: skip
        self._package_dir = package_dir
        self._wheels = tuple(wheels)  # already for the Lambda platform: cdk.wheels.lambda_wheels
        self._prefix = prefix
        self._extra_files = dict(extra_files or {})  # name at the asset's root -> file to copy there

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        """Called by the CDK before Docker bundling; returning True means the asset is built."""
        destination = Path(output_dir) / self._prefix if self._prefix else Path(output_dir)
        destination.mkdir(parents=True, exist_ok=True)
        if self._package_dir is not None:
            copy_package(self._package_dir, destination)
        for wheel in self._wheels:
            unpack(wheel, destination)
        for name, source in self._extra_files.items():
            shutil.copyfile(source, Path(output_dir) / name)
        return True

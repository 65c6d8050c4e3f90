"""Local (Docker-free) bundling of the Lambda code assets.

An asset is the ``lambdas`` package plus the installed files of a few pure-Python distributions (and their
installed dependency closure), copied from the environment that runs the synth, plus any native distributions
as their wheels for the Lambda platform, unpacked (cdk/wheels.py). Nothing is imported from ``lambdas``: the
files are only copied, so the bundle builds while that package is still being written.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path, PurePosixPath

import jsii
from aws_cdk import BundlingOptions, ILocalBundling
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cdk.wheels import unpack

# Compiled or cached files never belong in the bundle: Lambda compiles what it needs, and a native extension
# built on this machine would not match the Lambda platform.
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = frozenset({".pyc", ".pyo"})
_NATIVE_SUFFIXES = frozenset({".so", ".pyd", ".dylib"})


def dependency_closure(roots: Iterable[str], *, python_version: str) -> list[metadata.Distribution]:
    """Installed distributions needed by ``roots`` on a runtime of ``python_version`` (e.g. "3.14").

    Requirement markers are evaluated for the target runtime, not for the Python running the synth, and
    optional extras are left out. A requirement that applies but is not installed is an error.
    """
    environment = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    found: dict[str, metadata.Distribution] = {}
    pending = [Requirement(root) for root in roots]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{requirement.name} is needed in the Lambda bundle but is not installed in this environment "
                "(install requirements-dev.txt)"
            ) from None
        found[name] = distribution
        pending.extend(Requirement(text) for text in distribution.requires or ())
    return sorted(found.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def _wanted(relative: PurePosixPath) -> bool:
    return not (_SKIPPED_DIRS.intersection(relative.parts) or relative.suffix in _SKIPPED_SUFFIXES)


def copy_distribution(distribution: metadata.Distribution, destination: Path) -> int:
    """Copy an installed distribution's files (as listed in its RECORD) under ``destination``."""
    copied = 0
    for file in distribution.files or ():
        relative = PurePosixPath(str(file))
        # Entries outside site-packages (console scripts in ../../bin) are not importable code.
        if relative.parts[0] == ".." or not _wanted(relative):
            continue
        if relative.suffix in _NATIVE_SUFFIXES:
            raise RuntimeError(
                f"{distribution.metadata['Name']} ships a native extension ({relative}); "
                "only pure-Python distributions can be bundled without Docker"
            )
        source = Path(str(distribution.locate_file(file)))
        target = destination.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    return copied


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
    """Builds a function asset in-process: source package + installed pure-Python requirements + platform wheels."""

    def __init__(self, *, package_dir: Path, requirements: Iterable[str], python_version: str,
                 extra_files: dict[str, Path] | None = None, wheels: Iterable[Path] = ()) -> None:  # fmt: skip
        self._package_dir = package_dir
        self._requirements = tuple(requirements)
        self._python_version = python_version
        self._extra_files = dict(extra_files or {})  # name at the asset's root -> file to copy there
        self._wheels = tuple(wheels)  # already for the Lambda platform: cdk.wheels.lambda_wheels

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        """Called by the CDK before Docker bundling; returning True means the asset is built."""
        destination = Path(output_dir)
        copy_package(self._package_dir, destination)
        for distribution in dependency_closure(self._requirements, python_version=self._python_version):
            copy_distribution(distribution, destination)
        for wheel in self._wheels:
            unpack(wheel, destination)
        for name, source in self._extra_files.items():
            shutil.copyfile(source, destination / name)
        return True

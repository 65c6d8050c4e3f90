"""The native wheels of the extract function: for the Lambda platform, hash-locked, fetched once, unpacked offline."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from cdk import wheels
from cdk.functions import ARCHITECTURE, RUNTIME
from cdk.wheels import LambdaPlatform, lambda_wheels, pins, pure_requirements, unpack
from tests.cdk.support import REPO_ROOT

LAMBDA = LambdaPlatform.of(RUNTIME.name, ARCHITECTURE.name)


def test_the_platform_is_derived_from_the_functions_runtime_and_architecture() -> None:
    assert (LAMBDA.python_tag, LAMBDA.platform_tag) == ("cp314", "manylinux2014_x86_64")
    assert LambdaPlatform.of("python3.13", "arm64").platform_tag == "manylinux2014_aarch64"


@pytest.mark.parametrize(
    ("wheel", "runs"),
    [
        ("adbc_driver_manager-1.10.0-cp314-cp314-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
        ("adbc_driver_postgresql-1.10.0-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
        ("adbc_driver_manager-1.10.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", False),
        ("adbc_driver_manager-1.10.0-cp314-cp314-manylinux2014_aarch64.whl", False),
        ("adbc_driver_postgresql-1.10.0-py3-none-macosx_11_0_arm64.whl", False),
        ("six-1.17.0-py2.py3-none-any.whl", True),
    ],
)
def test_only_wheels_for_the_lambda_python_and_machine_are_accepted(wheel: str, runs: bool) -> None:
    assert LAMBDA.accepts(wheel) is runs


def test_every_locked_wheel_is_hash_pinned_at_the_version_requirements_txt_pins() -> None:
    locked = pins()
    text = wheels.LOCK_FILE.read_text()
    assert set(locked) == {"adbc-driver-manager", "adbc-driver-postgresql"}
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= len(locked)
    requirements = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), re.M))
    assert {canonicalize_name(n): v for n, v in requirements.items() if canonicalize_name(n) in locked} == locked


def test_the_pure_python_needs_of_the_drivers_are_bundled_from_this_environment() -> None:
    needed = {canonicalize_name(r.split(";")[0].split(">")[0].strip()) for r in pure_requirements(pins())}
    assert {"importlib-resources", "typing-extensions"} <= needed
    assert not needed & set(pins())


def test_a_missing_wheel_fails_the_synth_naming_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheels, "CACHE_DIR", tmp_path / "empty")
    with pytest.raises(RuntimeError, match=r"adbc-driver-manager==1\.10\.0 \(cp314, manylinux2014_x86_64\).*"
                                           r"run `make lambda-wheels`"):  # fmt: skip
        lambda_wheels(LAMBDA)


def test_a_locked_version_other_than_the_installed_one_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("adbc-driver-manager==0.1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(RuntimeError, match=r"locks adbc-driver-manager==0\.1\.0 but 1\.10\.0 is installed"):
        lambda_wheels(LAMBDA, pins(lock))


def test_a_wheel_is_unpacked_as_pip_installs_it_without_its_scripts(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/__init__.py", "")
        archive.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
        archive.writestr("demo-1.0.data/platlib/demo_native.so", b"\x7fELF")
        archive.writestr("demo-1.0.data/scripts/demo-cli", "#!python\n")
        archive.writestr("../escape.py", "")
    out = tmp_path / "asset"
    assert unpack(wheel, out) == 3
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "demo/__init__.py",
        "demo-1.0.dist-info/METADATA",
        "demo_native.so",
    }
    assert not (tmp_path / "escape.py").exists()


def test_reading_the_functions_platform_prints_no_node_banner_as_byte_strings() -> None:
    read = subprocess.run(
        [sys.executable, "-c", "from cdk.wheels import _functions_platform; print(_functions_platform())"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == str((RUNTIME.name, ARCHITECTURE.name))
    assert "b'" not in read.stderr and "!!" not in read.stderr, read.stderr

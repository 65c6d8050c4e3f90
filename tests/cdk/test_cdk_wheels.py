"""What the functions carry: wheels for the Lambda platform, hash-pinned in one list, fetched once, unpacked offline."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from cdk import wheels
from cdk.functions import ARCHITECTURE, RUNTIME
from cdk.wheels import LambdaPlatform, lambda_wheels, left_out, pins, unpack
from tests.cdk.support import REPO_ROOT

LAMBDA = LambdaPlatform.of(RUNTIME.name, ARCHITECTURE.name)


def test_the_platform_is_derived_from_the_functions_runtime_and_architecture() -> None:
    assert (LAMBDA.python_tag, LAMBDA.platform_tags) == ("cp314", ("manylinux_2_28_x86_64", "manylinux2014_x86_64"))
    assert LambdaPlatform.of("python3.13", "arm64").platform_tags[0] == "manylinux_2_28_aarch64"


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


def test_every_pin_is_exact_and_hash_checked_and_the_requirements_do_not_pin_again() -> None:
    locked = pins()
    text = wheels.LOCK_FILE.read_text()
    assert {"pyarrow", "aws-lambda-powertools", "adbc-driver-manager", "pg8000"} <= set(locked)
    blocks = re.split(r"\n(?=[A-Za-z])", text[text.index("\n" + next(iter(locked))) + 1 :])
    assert [block.split("==")[0] for block in blocks if not re.search(r"--hash=sha256:[0-9a-f]{64}", block)] == []
    # requirements.txt names what the functions need; the versions are only here (requirements-dev.txt applies it).
    assert re.findall(r"^[A-Za-z0-9._-]+==", (REPO_ROOT / "requirements.txt").read_text(), re.M) == []
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "pip install --quiet --no-deps --require-hashes -r constraints-lambda.txt" in makefile


def test_pyarrow_is_stripped_of_flight_headers_and_tests_but_keeps_what_it_links() -> None:
    dropped = left_out("pyarrow")
    for path in ("pyarrow/libarrow_flight.so.2500", "pyarrow/_flight.cpython-314-x86_64-linux-gnu.so",
                 "pyarrow/flight.py", "pyarrow/include/arrow/api.h", "pyarrow/tests/test_array.py",
                 "pyarrow/lib.pyx", "pyarrow/libarrow_python.so", "pyarrow/libarrow_python.so.2500.1.0"):  # fmt: skip
        assert dropped(PurePosixPath(path)), path
    for path in ("pyarrow/libarrow.so.2500", "pyarrow/libarrow_substrait.so.2500", "pyarrow/compute.py",
                 "pyarrow/libarrow_python.so.2500", "pyarrow/lib.cpython-314-x86_64-linux-gnu.so"):  # fmt: skip
        assert not dropped(PurePosixPath(path)), path
    assert not left_out("pg8000")(PurePosixPath("pg8000/tests/x.py"))


def test_a_missing_wheel_fails_the_synth_naming_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheels, "CACHE_DIR", tmp_path / "empty")
    with pytest.raises(RuntimeError, match=r"adbc-driver-manager==1\.10\.0 \(cp314, manylinux x86_64\).*"
                                           r"run `make lambda-wheels`"):  # fmt: skip
        lambda_wheels(LAMBDA, ["adbc-driver-manager"])


def test_a_distribution_that_is_not_pinned_cannot_go_into_a_function() -> None:
    with pytest.raises(RuntimeError, match=r"pandas goes into a Lambda function but is not pinned"):
        lambda_wheels(LAMBDA, ["pandas"])


def test_a_locked_version_other_than_the_installed_one_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("adbc-driver-manager==0.1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(RuntimeError, match=r"pins adbc-driver-manager==0\.1\.0 but 1\.10\.0 is installed"):
        lambda_wheels(LAMBDA, ["adbc-driver-manager"], pins(lock))


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


def test_the_wheel_fetch_reads_the_functions_platform_without_starting_node() -> None:
    """`make install` fetches the wheels with `python -m cdk.wheels`: importing aws-cdk-lib there would start jsii's
    Node (seconds, and on Node 20 an end-of-life banner forwarded as Python byte strings)."""
    read = subprocess.run(
        [sys.executable, "-c", "import sys, cdk.wheels as w; print(w.RUNTIME_NAME, w.ARCHITECTURE_NAME, "
         "any(m.startswith(('aws_cdk', 'jsii')) for m in sys.modules))"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == [RUNTIME.name, ARCHITECTURE.name, "False"]
    assert read.stderr == ""

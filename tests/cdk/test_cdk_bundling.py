"""The Docker-free function bundle: the lambdas package plus the pure-Python runtime dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdk.bundling import LocalPythonBundler, dependency_closure
from cdk.functions import BUNDLED_REQUIREMENTS, RUNTIME, STAGES, WHEEL_STAGES
from tests.cdk.support import REPO_ROOT, Synthesized

TARGET_PYTHON = RUNTIME.name.removeprefix("python")


def distribution_names(requirements: tuple[str, ...], python_version: str = TARGET_PYTHON) -> set[str]:
    return {d.metadata["Name"].lower() for d in dependency_closure(requirements, python_version=python_version)}


def test_dependency_closure_of_pg8000_and_iso4217() -> None:
    assert distribution_names(BUNDLED_REQUIREMENTS) == {
        "pg8000",
        "scramp",
        "asn1crypto",
        "python-dateutil",
        "six",
        "iso4217",
    }


def test_markers_are_evaluated_for_the_lambda_runtime_not_the_synth_python() -> None:
    # iso4217 needs importlib-resources only below Python 3.9, and importlib-resources (installed: ADBC's PostgreSQL
    # driver needs it) needs zipp only below 3.10, which is not installed here: asking for 3.8 must follow both.
    with pytest.raises(RuntimeError, match="zipp is needed in the Lambda bundle"):
        dependency_closure(["iso4217"], python_version="3.8")
    assert "importlib-resources" not in distribution_names(("iso4217",))


def test_local_bundler_copies_files_without_importing_or_caching(tmp_path: Path) -> None:
    package = tmp_path / "src" / "lambdas"
    (package / "extract" / "__pycache__").mkdir(parents=True)
    (package / "extract" / "handler.py").write_text("raise ImportError('never imported by the bundler')\n")
    (package / "extract" / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0")
    (package / "schema.sql").write_text("select 1;\n")
    out = tmp_path / "out"
    out.mkdir()

    bundler = LocalPythonBundler(package_dir=package, requirements=["six"], python_version=TARGET_PYTHON)
    assert bundler.try_bundle(str(out), None) is True

    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"lambdas/extract/handler.py", "lambdas/schema.sql", "six.py"} <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def asset_dir(synthesized: Synthesized, stages: tuple[str, ...]) -> Path:
    ids = synthesized.function_ids()
    keys = {synthesized.properties(ids[stage])["Code"]["S3Key"] for stage in stages}
    assert len(keys) == 1, f"{', '.join(stages)} share one code asset"
    return synthesized.outdir / f"asset.{keys.pop().removesuffix('.zip')}"


def function_asset_dir(synthesized: Synthesized) -> Path:
    """The asset of every function but those that also need native wheels (extract's bulk read)."""
    return asset_dir(synthesized, tuple(stage for stage in STAGES if stage not in WHEEL_STAGES))


def asset_files(asset: Path) -> set[str]:
    return {p.relative_to(asset).as_posix() for p in asset.rglob("*") if p.is_file()}


def lambdas_sources() -> set[str]:
    return {
        f"lambdas/{p.relative_to(REPO_ROOT / 'lambdas').as_posix()}"
        for p in (REPO_ROOT / "lambdas").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_synthesized_asset_holds_the_lambdas_package_and_the_dependencies(synthesized: Synthesized) -> None:
    asset = function_asset_dir(synthesized)
    files = {p.relative_to(asset).as_posix() for p in asset.rglob("*") if p.is_file()}

    source = {
        f"lambdas/{p.relative_to(REPO_ROOT / 'lambdas').as_posix()}"
        for p in (REPO_ROOT / "lambdas").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert source <= files
    for module in ("pg8000/__init__.py", "scramp/__init__.py", "asn1crypto/__init__.py", "dateutil/__init__.py",
                   "six.py", "iso4217/__init__.py"):  # fmt: skip
        assert module in files
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".so"))]
    # pandas, pyarrow, awswrangler, boto3 and Powertools come from the runtime and the managed layers.
    assert not {f.split("/")[0] for f in files} & {"pandas", "pyarrow", "awswrangler", "boto3", "aws_lambda_powertools"}


def test_the_extract_asset_holds_the_adbc_drivers_built_for_the_lambda_runtime_and_no_local_build(
    synthesized: Synthesized,
) -> None:
    extract = asset_dir(synthesized, WHEEL_STAGES)
    assert extract != function_asset_dir(synthesized), "only extract carries the native drivers"
    files = asset_files(extract)
    assert lambdas_sources() <= files
    for module in ("pg8000/__init__.py", "iso4217/__init__.py", "importlib_resources/__init__.py",
                   "typing_extensions.py", "adbc_driver_manager/dbapi.py", "adbc_driver_postgresql/dbapi.py",
                   "adbc_driver_postgresql/libadbc_driver_postgresql.so"):  # fmt: skip
        assert module in files
    python = RUNTIME.name.removeprefix("python").replace(".", "")
    extensions = {f for f in files if f.endswith(".so") and f.startswith("adbc_driver_manager/")}
    assert extensions and all(f".cpython-{python}-x86_64-linux-gnu.so" in f for f in extensions), extensions
    assert not [f for f in files if "cpython-311" in f or "__pycache__" in f or f.endswith(".pyc")]
    wheel = next(f for f in files if f.startswith("adbc_driver_manager-") and f.endswith(".dist-info/WHEEL"))
    tags = (extract / wheel).read_text()
    assert f"Tag: cp{python}-cp{python}-manylinux2014_x86_64" in tags
    assert not {f.split("/")[0] for f in files} & {"pandas", "pyarrow", "awswrangler", "boto3", "aws_lambda_powertools"}

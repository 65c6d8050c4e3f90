"""The Docker-free assets: the lambdas package plus the wheels of its distributions, and the layers' wheels."""

from __future__ import annotations

import zipfile
from pathlib import Path

from cdk.bundling import LAYER_PREFIX, LocalPythonBundler
from cdk.functions import RUNTIME, STAGES, WHEEL_STAGES
from tests.cdk.support import REPO_ROOT, Synthesized


def _wheel(directory: Path, name: str, files: dict[str, str]) -> Path:
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_local_bundler_copies_files_without_importing_or_caching(tmp_path: Path) -> None:
    package = tmp_path / "src" / "lambdas"
    (package / "extract" / "__pycache__").mkdir(parents=True)
    (package / "extract" / "handler.py").write_text("raise ImportError('never imported by the bundler')\n")
    (package / "extract" / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0")
    (package / "schema.sql").write_text("select 1;\n")
    out = tmp_path / "out"
    out.mkdir()

    wheel = _wheel(tmp_path, "tiny", {"tiny.py": "", "tiny-1.0.dist-info/METADATA": "Name: tiny\nVersion: 1.0\n"})
    bundler = LocalPythonBundler(package_dir=package, wheels=[wheel])
    assert bundler.try_bundle(str(out), None) is True

    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"lambdas/extract/handler.py", "lambdas/schema.sql", "tiny.py", "tiny-1.0.dist-info/METADATA"} <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_a_layer_bundle_is_its_wheels_under_python(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, "tiny", {"tiny/__init__.py": ""})
    out = tmp_path / "out"
    LocalPythonBundler(wheels=[wheel], prefix=LAYER_PREFIX).try_bundle(str(out), None)
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {"python/tiny/__init__.py"}


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
    # pyarrow and Powertools are in the layers, boto3 is the runtime's; pandas and awswrangler are nowhere.
    assert not {f.split("/")[0] for f in files} & {"pandas", "pyarrow", "awswrangler", "boto3", "aws_lambda_powertools"}


def test_the_extract_asset_holds_the_adbc_drivers_built_for_the_lambda_runtime_and_no_local_build(
    synthesized: Synthesized,
) -> None:
    extract = asset_dir(synthesized, WHEEL_STAGES)
    assert extract != function_asset_dir(synthesized), "only extract carries the native drivers"
    files = asset_files(extract)
    assert lambdas_sources() <= files
    for module in ("pg8000/__init__.py", "iso4217/__init__.py", "importlib_resources/__init__.py",
                   "adbc_driver_manager/dbapi.py", "adbc_driver_postgresql/dbapi.py",
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

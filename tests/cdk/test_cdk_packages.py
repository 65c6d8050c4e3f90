"""What each function carries, read from the synthesized cloud assembly: its code plus its layers, as Lambda unzips
them. Measured against Lambda's limit (with room to grow), compared version by version with the environment the
tests run in, and loaded, stripped as it is, by an interpreter that sees nothing else."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cdk.bundling import copy_package
from cdk.functions import RUNTIME
from cdk.wheels import left_out, pins
from tests.cdk.support import REPO_ROOT, Synthesized

MiB = 1024 * 1024
# Lambda refuses code plus layers above 262,144,000 bytes unzipped; the project keeps this much below it.
BUDGET_BYTES = 200 * MiB
# What the Lambda Python runtime itself provides (boto3 and its dependencies); no asset carries them.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six")
TARGET = {
    "python_version": RUNTIME.name.removeprefix("python"),
    "python_full_version": RUNTIME.name.removeprefix("python") + ".0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "extra": "",
}


@dataclass(frozen=True)
class Carried:
    """One function as Lambda assembles it: its code directory, then its layers' directories, in order."""

    code: Path
    layers: tuple[Path, ...]

    @property
    def directories(self) -> tuple[Path, ...]:
        return (self.code, *self.layers)

    @property
    def size(self) -> int:
        return sum(_size(directory) for directory in self.directories)

    def distributions(self) -> dict[str, str]:
        """Name -> version of every distribution (dist-info) in the code and the layers."""
        return {name: version for directory in self.directories for name, version, _ in _dist_infos(directory)}

    def requirements(self) -> Iterator[tuple[str, Requirement]]:
        for directory in self.directories:
            for name, _, message in _dist_infos(directory):
                for text in message.get_all("Requires-Dist") or ():
                    yield name, Requirement(text)


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file() and not path.is_symlink())


def _dist_infos(directory: Path) -> Iterator[tuple[str, str, email.message.Message]]:
    for info in sorted(directory.glob("*.dist-info")) + sorted(directory.glob("python/*.dist-info")):
        message = email.message_from_string((info / "METADATA").read_text(encoding="utf-8"))
        yield canonicalize_name(message["Name"]), message["Version"], message


def carried(synth: Synthesized) -> dict[str, Carried]:
    """Stage -> what its function carries, found through the template's asset keys (every layer must be one)."""

    def asset(key: str) -> Path:
        directory = synth.outdir / f"asset.{key.removesuffix('.zip')}"
        assert directory.is_dir(), f"no asset directory for {key}"
        return directory

    found = {}
    for stage, logical in synth.function_ids().items():
        properties = synth.properties(logical)
        layers = []
        for layer in properties.get("Layers", []):
            assert isinstance(layer, dict) and "Ref" in layer, f"{stage}: layer {layer} is not built by this stack"
            layers.append(asset(synth.properties(layer["Ref"])["Content"]["S3Key"]))
        found[stage] = Carried(asset(properties["Code"]["S3Key"]), tuple(layers))
    return found


@pytest.fixture(scope="module", params=["synthesized", "variant"])
def shape(request: pytest.FixtureRequest) -> dict[str, Carried]:
    return carried(request.getfixturevalue(request.param))


def test_each_function_with_its_layers_is_at_most_200_mib_unzipped(shape: dict[str, Carried]) -> None:
    sizes = {stage: function.size for stage, function in shape.items()}
    assert {stage: round(size / MiB, 1) for stage, size in sizes.items() if size > BUDGET_BYTES} == {}
    # The measurement measures: the extract function carries pyarrow and the ADBC drivers.
    assert sizes["extract"] > 50 * MiB > sizes["report"]


def test_the_layers_leave_out_what_no_function_imports(synthesized: Synthesized) -> None:
    (arrow,) = {layer for function in carried(synthesized).values() for layer in function.layers
                if (layer / "python" / "pyarrow").is_dir()}  # fmt: skip
    files = {path.relative_to(arrow / "python").as_posix() for path in arrow.rglob("*") if path.is_file()}
    assert {"pyarrow/lib.cpython-314-x86_64-linux-gnu.so", "pyarrow/libparquet.so.2500"} <= files
    never_imported = ("pyarrow/include/", "pyarrow/tests/", "pyarrow/src/", "pyarrow/_substrait", "pyarrow/substrait")
    assert [file for file in files if "flight" in file or file.startswith(never_imported)] == []


def test_every_distribution_in_the_functions_is_the_version_the_tests_run(shape: dict[str, Carried]) -> None:
    shipped = {name: version for function in shape.values() for name, version in function.distributions().items()}
    installed = {name: metadata.version(name) for name in shipped}
    assert shipped == installed
    # ... and what is shipped is exactly the one pin list: nothing unpinned, nothing pinned and left behind.
    assert shipped == pins()


def test_every_requirement_of_a_carried_distribution_is_carried_by_the_same_function(
    shape: dict[str, Carried],
) -> None:
    unmet = set()
    for stage, function in shape.items():
        present = set(function.distributions()) | {canonicalize_name(name) for name in RUNTIME_PROVIDED}
        for name, requirement in function.requirements():
            applies = requirement.marker is None or requirement.marker.evaluate(TARGET)
            if applies and canonicalize_name(requirement.name) not in present:
                unmet.add((stage, name, str(requirement)))
    assert unmet == set()


@pytest.fixture(scope="module")
def stripped_here(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Each function's directories rebuilt from this environment's (CPython 3.11) installs of the same
    distributions, stripped by the same rules: what the functions carry, in a form this interpreter can load."""
    root = tmp_path_factory.mktemp("carried-here")
    built: dict[Path, Path] = {}

    def rebuild(directory: Path) -> Path:
        if directory not in built:
            target = root / directory.name
            prefix = target / "python" if (directory / "python").is_dir() else target
            if (directory / "lambdas").is_dir():
                copy_package(REPO_ROOT / "lambdas", prefix)
            for name, _, _ in _dist_infos(directory):
                _copy_installed(name, prefix)
            built[directory] = prefix
        return built[directory]

    runtime = root / "runtime"
    for name in RUNTIME_PROVIDED:
        _copy_installed(name, runtime)
    return {stage: [*(rebuild(d) for d in function.directories), runtime]
            for stage, function in carried(synthesized).items()}  # fmt: skip


def _copy_installed(name: str, destination: Path) -> None:
    distribution = metadata.distribution(name)
    dropped = left_out(name)
    for file in distribution.files or ():
        relative = PurePosixPath(str(file))
        if relative.parts[0] == ".." or "__pycache__" in relative.parts or dropped(relative):
            continue
        target = destination.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A hard link or a copy, not a symbolic link: a native library finds its neighbours by its own path ($ORIGIN).
        source = Path(str(distribution.locate_file(file)))
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


# What each handler does with its libraries at import, and what the data stages do with Arrow besides.
ARROW_WORK = """
import io, pyarrow as pa, pyarrow.compute as pc, pyarrow.csv as pcsv, pyarrow.parquet as pq
table = pcsv.read_csv(io.BytesIO(b"id,amount\\n1,2.5\\n2,3.5\\n"))
sink = io.BytesIO(); pq.write_table(table, sink)
assert pc.sum(pq.read_table(io.BytesIO(sink.getvalue()))["amount"]).as_py() == 6.0
"""
EXTRACT_WORK = "import adbc_driver_postgresql, os; assert os.path.isfile(adbc_driver_postgresql._driver_path())\n"


@pytest.mark.parametrize("stage", ["extract", "transform", "load", "report", "lease"])
def test_each_handler_imports_and_works_from_exactly_what_its_function_carries(
    stage: str, stripped_here: dict[str, list[Path]]
) -> None:
    work = {"extract": ARROW_WORK + EXTRACT_WORK, "transform": ARROW_WORK, "load": ARROW_WORK}.get(stage, "")
    program = (f"import sys; sys.path[:0] = {[str(p) for p in stripped_here[stage]]!r}\n"
               f"import lambdas.{stage}.handler\n{work}"
               "print(sorted({m.split('.')[0] for m in sys.modules}))")  # fmt: skip
    # As in Lambda (LAMBDA_TASK_ROOT set): Powertools' Tracer is on, so it imports aws-xray-sdk and patches botocore.
    environment = {"AWS_DEFAULT_REGION": "eu-west-2", "POWERTOOLS_SERVICE_NAME": f"totesys-{stage}",
                   "POWERTOOLS_METRICS_NAMESPACE": "TotesysEtl", "PATH": "/usr/bin:/bin",
                   "LAMBDA_TASK_ROOT": str(stripped_here[stage][0]),
                   "AWS_LAMBDA_FUNCTION_NAME": f"totesys-{stage}"}  # fmt: skip
    done = subprocess.run([sys.executable, "-I", "-S", "-c", program], capture_output=True, text=True,
                          env=environment, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # -S: no site-packages; what was imported came from the function's directories (and the runtime's boto3).
    imported = set(done.stdout.split("'"))
    assert "site" not in imported
    assert "aws_xray_sdk" in imported


def test_the_readme_states_the_size_each_function_measures(synthesized: Synthesized) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### What each function carries") :]
    stated = {
        stage.strip(): float(size)
        for stages, size in re.findall(r"^\| ([a-z, ]+) \|[^\n]*\| ([\d.]+) MiB \|$", table, flags=re.MULTILINE)
        for stage in stages.split(",")
    }
    measured = {stage: function.size / MiB for stage, function in carried(synthesized).items()}
    assert set(stated) == set(measured)
    # Within 1 MiB: the code grows a little with every change; a layer or a pin that changes shows.
    off = {stage: (stated[stage], round(size, 1)) for stage, size in measured.items() if abs(stated[stage] - size) > 1}
    assert off == {}

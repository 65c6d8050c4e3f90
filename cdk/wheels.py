"""What the Lambda functions carry: the wheels of constraints-lambda.txt for the Lambda platform, unpacked offline.

One pin list (LOCK_FILE) holds every distribution the functions carry, with the hashes of its wheel for the Lambda
platform and for the test environment: `make install` installs it into the test environment and fetches the
Lambda-platform wheels into a cache (`make lambda-wheels`, pip checking the hashes), and the synth unpacks them
into the functions' code and layers with neither network nor Docker. What a function never imports (pyarrow's
Flight and Substrait libraries, C++ headers, Cython sources, tests) is left out as the wheel is unpacked: LEFT_OUT.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name, parse_wheel_filename

from cdk.platform import ARCHITECTURE_NAME, RUNTIME_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = REPO_ROOT / "constraints-lambda.txt"
CACHE_DIR = REPO_ROOT / ".cache" / "lambda-wheels"
MAKE_TARGET = "make lambda-wheels"
_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's architecture name -> the wheel tags' machine
# The Lambda runtimes from python3.12 on run on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels and older.
_GLIBC = "2_28"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)

# Files of a distribution that no function imports, by distribution: (pattern on the path inside the wheel, why).
# tests/cdk/test_cdk_packages.py imports what the functions import from a tree stripped by these same rules.
LEFT_OUT: dict[str, tuple[tuple[str, str], ...]] = {
    "pyarrow": (
        (r"pyarrow/(lib)?(arrow_)?(python_)?_?flight[^/]*", "Arrow Flight RPC (pyarrow.flight): never imported"),
        (r"pyarrow/libarrow_flight[^/]*|pyarrow/libarrow_python_flight[^/]*", "the Flight libraries"),
        # Not libarrow_substrait.so: pyarrow.lib links it (tests/cdk/test_cdk_packages.py found out).
        (r"pyarrow/_?substrait[^/]*", "the Substrait module (query plans): never imported"),
        (r"pyarrow/(include|includes|src|tests)/.*", "C++ headers, Cython declarations and sources, the test suite"),
        (r"pyarrow/_pyarrow_cpp_tests[^/]*", "the C++ tests' module"),
        (r"pyarrow/[^/]*\.(pxd|pxi|pyx)", "Cython sources, compiled into the extension modules already"),
        # The wheel stores each of these shared libraries three times (zip has no symbolic links); the extension
        # modules load them by their soname, lib<name>.so.<major><minor>.
        (r"pyarrow/libarrow_python\w*\.so(\.\d+\.\d+\.\d+)?", "copies of libarrow_python*.so.<soname>"),
    ),
}


@dataclass(frozen=True)
class LambdaPlatform:
    """The Python and machine a function runs on, as wheel tags name them."""

    python_version: str  # "3.14"
    machine: str  # "x86_64" or "aarch64"

    @classmethod
    def of(cls, runtime_name: str, architecture_name: str) -> LambdaPlatform:
        """From the CDK's names: Runtime.name ("python3.14") and Architecture.name ("x86_64", "arm64")."""
        if not runtime_name.startswith("python3.") or architecture_name not in _MACHINES:
            raise ValueError(f"no wheels for the runtime {runtime_name} on {architecture_name}")
        return cls(runtime_name.removeprefix("python"), _MACHINES[architecture_name])

    @property
    def python_tag(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    @property
    def platform_tags(self) -> tuple[str, ...]:
        """pip's --platform values: manylinux_2_28 and older; pip does not derive the legacy manylinux2014 name."""
        return (f"manylinux_{_GLIBC}_{self.machine}", f"manylinux2014_{self.machine}")

    @property
    def cache(self) -> Path:
        return CACHE_DIR / f"{self.python_tag}-manylinux_{self.machine}"

    def accepts(self, wheel: str) -> bool:
        """A wheel that runs here: for this CPython (or any Python 3), on manylinux for this machine (or any)."""
        _, _, _, tags = parse_wheel_filename(wheel)
        interpreters = {self.python_tag, "py3", "py" + self.python_tag.removeprefix("cp")}
        return any(
            tag.interpreter in interpreters
            and tag.abi in {self.python_tag, "abi3", "none"}
            and (tag.platform == "any" or re.fullmatch(rf"manylinux\w*_{self.machine}", tag.platform) is not None)
            for tag in tags
        )


def pins(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """Distribution name -> version, as the lock file pins them."""
    return {canonicalize_name(name): version for name, version in _PIN.findall(lock_file.read_text(encoding="utf-8"))}


def download_command(platform: LambdaPlatform, lock_file: Path = LOCK_FILE) -> list[str]:
    """pip, fetching exactly the locked wheels (hash-checked) for the Lambda platform, not this machine's."""
    platforms = [option for tag in platform.platform_tags for option in ("--platform", tag)]
    return [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
            "--require-hashes", "--implementation", "cp", "--python-version", platform.python_version, *platforms,
            "--dest", str(platform.cache), "-r", str(lock_file)]  # fmt: skip


def check_installed(locked: dict[str, str]) -> None:
    """The locked versions are the installed ones: the tests run the code with what the Lambda gets."""
    for name, version in locked.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name} is pinned in {LOCK_FILE.name} but not installed: run `make install`") from None
        if installed != version:
            raise RuntimeError(f"{LOCK_FILE.name} pins {name}=={version} but {installed} is installed: "
                               "run `make install`")  # fmt: skip


def lambda_wheels(platform: LambdaPlatform, names: Iterable[str], locked: dict[str, str] | None = None) -> list[Path]:
    """The cached wheel of each named distribution, at its locked version, for this platform.

    A distribution that is not pinned is an error (everything a function carries is pinned); a missing wheel
    names the make target that fetches it.
    """
    locked = pins() if locked is None else locked
    check_installed(locked)
    cached = sorted(platform.cache.glob("*.whl")) if platform.cache.is_dir() else []
    found = []
    for raw in names:
        name = canonicalize_name(raw)
        if name not in locked:
            raise RuntimeError(f"{raw} goes into a Lambda function but is not pinned in {LOCK_FILE.name}")
        version = locked[name]
        matches = [wheel for wheel in cached if _is(wheel, name, version) and platform.accepts(wheel.name)]
        if not matches:
            raise RuntimeError(f"the Lambda-platform wheel of {name}=={version} ({platform.python_tag}, "
                               f"manylinux {platform.machine}) is not in {platform.cache}: run `{MAKE_TARGET}` "
                               "(part of `make install`; it needs the package index once)")  # fmt: skip
        found.append(matches[-1])
    return found


def _is(wheel: Path, name: str, version: str) -> bool:
    wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
    return wheel_name == name and str(wheel_version) == version


def left_out(distribution: str) -> Callable[[PurePosixPath], bool]:
    """Whether a path of this distribution's wheel is left out of the functions (LEFT_OUT)."""
    patterns = [re.compile(pattern) for pattern, _ in LEFT_OUT.get(canonicalize_name(distribution), ())]
    return lambda path: any(pattern.fullmatch(path.as_posix()) for pattern in patterns)


def unpack(wheel: Path, destination: Path) -> int:
    """A wheel's importable files under `destination`, as pip would install them into site-packages.

    Its .data/purelib and .data/platlib go to the root; its scripts, headers and other .data are left out, and
    so is what LEFT_OUT names for its distribution (its RECORD still lists those files: nothing reads it).
    """
    dropped = left_out(str(parse_wheel_filename(wheel.name)[0]))
    unpacked = 0
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            path = PurePosixPath(member.filename)
            if member.is_dir() or path.is_absolute() or ".." in path.parts:
                continue
            if path.parts[0].endswith(".data"):
                if len(path.parts) < 3 or path.parts[1] not in ("purelib", "platlib"):
                    continue
                path = PurePosixPath(*path.parts[2:])
            if dropped(path):
                continue
            target = destination.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
            target.chmod(0o755 if (member.external_attr >> 16) & 0o111 else 0o644)
            unpacked += 1
    return unpacked


def main() -> None:
    """`python -m cdk.wheels`: fetch the locked wheels for the functions' runtime and architecture."""
    platform = LambdaPlatform.of(RUNTIME_NAME, ARCHITECTURE_NAME)  # plain names: no aws-cdk-lib, so no Node
    locked = pins()
    check_installed(locked)
    platform.cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(download_command(platform), check=True)  # noqa: S603 - pip with fixed arguments
    for wheel in lambda_wheels(platform, locked, locked):
        print(f"{wheel.name} in {platform.cache}")


if __name__ == "__main__":
    main()

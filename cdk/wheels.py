"""Native distributions for a Lambda function: their wheels for the Lambda platform, fetched once, unpacked offline.

cdk/bundling.py copies installed pure-Python distributions; a native one installed here is built for this machine
(CPython 3.11), not for the Lambda runtime. So its wheel for the runtime's Python and architecture is fetched by pip
(`make lambda-wheels`, part of `make install`) into a cache, checked against the hashes of LOCK_FILE, and the synth
unpacks it into the function's asset, with neither network nor Docker.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

LOCK_FILE = Path(__file__).with_name("lambda-wheels.txt")
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "lambda-wheels"
MAKE_TARGET = "make lambda-wheels"
_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's architecture name -> the wheel tags' machine
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


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
    def platform_tag(self) -> str:
        return f"manylinux2014_{self.machine}"

    @property
    def cache(self) -> Path:
        return CACHE_DIR / f"{self.python_tag}-{self.platform_tag}"

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
    return [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
            "--require-hashes", "--implementation", "cp", "--python-version", platform.python_version,
            "--platform", platform.platform_tag, "--dest", str(platform.cache), "-r", str(lock_file)]  # fmt: skip


def check_installed(locked: dict[str, str]) -> None:
    """The locked versions are the installed ones: the tests run the code with the driver the Lambda gets."""
    for name, version in locked.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{name} is locked in {LOCK_FILE.name} but not installed (install requirements.txt)"
            ) from None
        if installed != version:
            raise RuntimeError(f"{LOCK_FILE.name} locks {name}=={version} but {installed} is installed: pin "
                               f"one version in requirements.txt and {LOCK_FILE.name} (with its hashes)")  # fmt: skip


def lambda_wheels(platform: LambdaPlatform, locked: dict[str, str] | None = None) -> list[Path]:
    """The cached wheel of each locked distribution for this platform; a missing one names the make target."""
    locked = pins() if locked is None else locked
    check_installed(locked)
    cached = sorted(platform.cache.glob("*.whl")) if platform.cache.is_dir() else []
    found = []
    for name, version in locked.items():
        matches = [wheel for wheel in cached if _is(wheel, name, version) and platform.accepts(wheel.name)]
        if not matches:
            raise RuntimeError(f"the Lambda-platform wheel of {name}=={version} ({platform.python_tag}, "
                               f"{platform.platform_tag}) is not in {platform.cache}: run `{MAKE_TARGET}` "
                               "(part of `make install`; it needs the package index once)")  # fmt: skip
        found.append(matches[-1])
    return found


def _is(wheel: Path, name: str, version: str) -> bool:
    wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
    return wheel_name == name and str(wheel_version) == version


def pure_requirements(locked: dict[str, str]) -> list[str]:
    """What the locked distributions need besides each other (pure Python, bundled from this environment).

    Read from the installed distributions, whose versions check_installed holds equal to the locked wheels'."""
    needed = []
    for name in locked:
        for text in metadata.distribution(name).requires or ():
            if canonicalize_name(Requirement(text).name) not in locked:
                needed.append(text)
    return needed


def unpack(wheel: Path, destination: Path) -> int:
    """A wheel's importable files under `destination`, as pip would install them into site-packages.

    Its .data/purelib and .data/platlib go to the root; its scripts, headers and other .data are left out.
    """
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
            target = destination.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
            target.chmod(0o755 if (member.external_attr >> 16) & 0o111 else 0o644)
            unpacked += 1
    return unpacked


def _functions_platform() -> tuple[str, str]:
    """The functions' runtime and architecture, read without Node's banner: importing aws-cdk-lib starts jsii's
    Node, which on Node 20 prints an end-of-life banner (harmless: see the README) that jsii forwards to stderr as
    Python byte strings. Anything else Node says is passed on, as text."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        from cdk.functions import ARCHITECTURE, RUNTIME

        platform = (RUNTIME.name, ARCHITECTURE.name)  # calls into Node: its banner has been written by now
    for line in captured.getvalue().splitlines():
        text = _as_text(line).rstrip()
        if text and not text.startswith("!!"):  # the banner's lines are framed in "!!"
            print(text, file=sys.stderr)
    return platform


def _as_text(line: str) -> str:
    """A line jsii forwarded as the repr of bytes (b'...\\n'), decoded; any other line as it is."""
    if line.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            return line
        return value.decode(errors="replace") if isinstance(value, bytes) else line
    return line


def main() -> None:
    """`python -m cdk.wheels`: fetch the locked wheels for the functions' runtime and architecture."""
    platform = LambdaPlatform.of(*_functions_platform())
    check_installed(pins())
    platform.cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(download_command(platform), check=True)  # noqa: S603 - pip with fixed arguments
    for wheel in lambda_wheels(platform):
        print(f"{wheel.name} in {platform.cache}")


if __name__ == "__main__":
    main()

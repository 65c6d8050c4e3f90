"""The security lint (flake8-bandit's rules in ruff) runs on the project's code as part of `make test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint(path: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--stdin-filename", path, "-"], cwd=ROOT,
                          input=code, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_sql_pasted_from_values_and_shell_commands_fail_the_lint_in_project_code() -> None:
    sql = 'def f(con, v: str) -> None:\n    con.run(f"SELECT * FROM t WHERE a = {v}")\n'
    pasted = lint("lambdas/extract/example.py", sql)
    shell = lint("statemachine/example.py", 'import subprocess\n\nsubprocess.run("ls", shell=True)\n')
    assert pasted.returncode == 1 and "S608" in pasted.stdout
    assert shell.returncode == 1 and "S602" in shell.stdout


def test_the_whole_project_passes_the_security_lint() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "S", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout

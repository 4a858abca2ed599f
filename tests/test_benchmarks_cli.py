"""``python -m benchmarks`` as a user meets it: from any directory, and saying which
extra it needs when it is missing (not a ModuleNotFoundError traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bridge_support import python_env

HIDE_PSUTIL = (
    "import runpy, sys\n"
    "sys.modules['psutil'] = None  # as if the bench extra were not installed\n"
    "sys.argv = ['benchmarks', '--quick', 'local']\n"
    "runpy.run_module('benchmarks', run_name='__main__')\n"
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = python_env()
    env.pop("PYTHONPATH", None)  # only what the install put on the path
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_benchmarks_run_from_any_directory(tmp_path: Path) -> None:
    result = _run(["-m", "benchmarks", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_without_the_bench_extra_the_message_names_it(tmp_path: Path) -> None:
    result = _run(["-c", HIDE_PSUTIL], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "python -m benchmarks needs the bench extra (missing: psutil): pip install -e '.[bench]'\n"
    )
    assert "Traceback" not in result.stderr

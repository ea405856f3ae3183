"""Every benchmark script must at least parse its command line: ``--help`` exits 0.

Benchmarks are run by hand, rarely; this keeps an import or argparse error from
sitting unnoticed until someone needs the numbers.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO_ROOT / "benchmarks").glob("*.py"))


def test_benchmark_scripts_found() -> None:
    assert SCRIPTS, "no benchmarks/*.py found"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_benchmark_help(script: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (
        f"{script.name} --help exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    assert "usage" in proc.stdout.lower(), f"{script.name} --help printed no usage:\n{proc.stdout[-2000:]}"

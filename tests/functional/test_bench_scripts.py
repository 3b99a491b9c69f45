"""The benchmarks keep working (their figures are reported, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("script", ["bench/cold_start.py", "bench/launch_local.py"])
def test_benchmark_runs_and_prints_a_ratio(script: str) -> None:
    result = subprocess.run([sys.executable, script, "--rounds", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^ratio \(target <= [0-9.]+\): [0-9.]+$", result.stdout, re.MULTILINE), \
        result.stdout

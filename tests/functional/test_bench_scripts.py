"""The benchmarks keep working (their figures are reported, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(("script", "args"), [("bench/cold_start.py", ["--rounds", "1"]),
                                              ("bench/launch_local.py", ["--rounds", "1"]),
                                              ("bench/aws_calls.py", [])])
def test_benchmark_runs_and_prints_a_ratio(script: str, args: list[str]) -> None:
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^ratio \(target <= [0-9.]+\): [0-9.]+$", result.stdout, re.MULTILINE), \
        result.stdout

"""The benchmarks keep working (their figures are reported, never asserted)."""

from __future__ import annotations

import re
import shutil
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


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="configurable-http-proxy needs node and npm")
def test_proxy_benchmark_compares_with_configurable_http_proxy() -> None:
    result = subprocess.run([sys.executable, "bench/proxy.py", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for name in ("direct", "chp", "binderless"):
        assert re.search(rf"^ *{name} http c=128 +[0-9]+ req/s", result.stdout, re.MULTILINE), \
            result.stdout
    assert re.search(r"^ *ratio requests/s at c>=32 \(target >= 1.0\): [0-9.]+$", result.stdout,
                     re.MULTILINE), result.stdout
    assert re.search(r"binderless held 50/50 \(errors 0, lost 0\)", result.stdout), result.stdout

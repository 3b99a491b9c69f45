"""Cold start: import time of the Lambda handler module against ``import boto3`` alone.

    .venv/bin/python bench/cold_start.py [--rounds 15]

Each import runs in a fresh interpreter (as a Lambda cold start does), alternating
the two, with the handler module (``functions/app.py``) and its vendored-looking
path set up like the deployment package. Prints the medians and their ratio
(target: 1.5 or less). Makes no network call and creates no AWS client.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"

TIMER = """
import sys, time
sys.path.insert(0, {path!r})
start = time.perf_counter()
import {module}
print(time.perf_counter() - start)
"""


def measure(module: str) -> float:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
           "BINDERLESS_MODE": "aws", "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", TIMER.format(path=str(FUNCTIONS), module=module)],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    measure("app")  # warm the file cache and byte-compile once, for both sides alike
    measure("boto3")
    handler, boto = [], []
    for _ in range(args.rounds):
        handler.append(measure("app"))
        boto.append(measure("boto3"))
    h, b = statistics.median(handler), statistics.median(boto)
    print(f"import app (Lambda handler module): median {h * 1000:.0f} ms")
    print(f"import boto3 alone                : median {b * 1000:.0f} ms")
    print(f"ratio (target <= 1.5): {h / b:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark a local Dask cluster (``runtime.cluster=local``) against the in-process run.

Runs ``kedro run --to-nodes summarise_heads`` (prompts, baselines and the head sweep of the run's
models, the default settings) twice, one after the other, each in a fresh copy of the project:
in process, then on a local cluster of ``--workers`` CPU workers. Prints both wall times, their
ratio, when each model's sweep finished, and the largest difference between the two per-head
tables. Run it alone: two torch processes on two cores slow each other down.

Run: ``python benchmarks/bench_cluster.py [--workers 2] [--params k=v,...]``; prints a Markdown block
for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]


def _copy(root: Path) -> Path:
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def _run(root: Path, params: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "kedro", "run", "--to-nodes", "summarise_heads"] + (
        ["--params", params] if params else [])
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1", "COLUMNS": "400"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    return seconds, done.stdout + done.stderr


def _per_head(root: Path) -> pd.DataFrame:
    return pd.read_parquet(sorted(root.glob("data/07_model_output/per_head.parquet/*/per_head.parquet"))[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--params", default="", help="extra --params for both runs")
    args = parser.parse_args()
    extra = [args.params] if args.params else []
    with tempfile.TemporaryDirectory() as tmp:
        here, there = _copy(Path(tmp) / "in_process"), _copy(Path(tmp) / "cluster")
        t_here, _ = _run(here, ",".join(extra))
        t_there, log = _run(there, ",".join(["runtime.cluster=local", f"runtime.workers={args.workers}", *extra]))
        a, b = _per_head(here), _per_head(there)
        numeric = [c for c in a.columns if a[c].dtype.kind == "f"]
        largest = float((a[numeric] - b[numeric]).abs().max().max())
    settings = "defaults" + (f" + {args.params}" if extra else "")
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores; settings: {settings}.\n")
    print("| run | wall time (s) | vs. in process |")
    print("|---|---|---|")
    print(f"| in process | {t_here:.0f} | 1.00x |")
    print(f"| local cluster, {args.workers} CPU workers | {t_there:.0f} | {t_here / t_there:.2f}x |")
    print(f"\nLargest |difference| between the two per-head tables: {largest:.1e}.")
    print("Order in which the cluster finished the models' sweeps: "
          + ", ".join(re.findall(r"INFO\s+(\S+): head sweep done", log)) + ".")


if __name__ == "__main__":
    main()

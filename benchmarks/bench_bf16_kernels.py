"""Benchmark what the CPU's bfloat16 kernels do to Δ: the mixed-bfloat16 sweep of the embedded models
with oneDNN's AMX kernels against the same sweep with AMX switched off (AVX-512 BF16 kernels).

Both kernel families round each product to bfloat16 but accumulate in different orders, so their
results differ at the level of bfloat16's rounding (tests/rounding.py). This measures how much that
is in the study's own terms: per model and task, the largest and median |Δ_AMX − Δ_AVX-512| over
every head, and every head whose category changes at each τ. Each kernel family runs in a process
of its own (``ONEDNN_MAX_CPU_ISA`` is read when torch loads), one after the other.

Run: ``python benchmarks/bench_bf16_kernels.py [--models smollm2-135m gemma3-270m]`` on a CPU with
AMX (``lscpu | grep -o amx_bf16``); prints Markdown for docs/performance.md. Run it alone: two torch
processes on two cores slow each other down.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from bench_precision import measure
from bench_screen import default_prompts
from compare_runs import flips

from ioi_anti.models.loading import load_tokenizer, release_models
from ioi_anti.models.spec import ModelSpec
from ioi_anti.report.markdown import markdown_table
from ioi_anti.run.validation import project_settings
from ioi_anti.tasks import PAIR as TASKS
from ioi_anti.tasks import prompts as P

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {"AMX": None, "AVX-512 BF16": "AVX512_CORE_BF16"}
"""Each kernel family and the ``ONEDNN_MAX_CPU_ISA`` that selects it (None: oneDNN's own choice)."""


def has_amx() -> bool:
    """Whether the CPU has AMX bfloat16 instructions (Linux: the flags of /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and "amx_bf16" in cpuinfo.read_text()


def sweep_tables(models: list[str], out: Path) -> None:
    """Every model's mixed-bfloat16 per-head table on the default prompts, saved to ``out``."""
    settings = project_settings(ROOT / "conf")
    runtime = settings.runtime.model_copy(update={"device": "cpu"})
    specs = [ModelSpec.from_registry(m, settings.model_registry) for m in models]
    prompts = default_prompts(specs, settings.data_generation)
    tables = []
    for spec in specs:
        tokens = P.tokenise_prompts(prompts, load_tokenizer(spec), spec.prepend_bos)
        tables.append(measure(spec, tokens, runtime, "bfloat16", None, settings.head_ablation, settings.seed)[0])
        release_models()
    pd.concat(tables, ignore_index=True).to_parquet(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="model ids (default: the run's `models`)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a child process: one kernel family
    args = parser.parse_args()
    models = args.models or project_settings(ROOT / "conf").models
    if args.one is not None:
        sweep_tables(models, args.one)
        return
    if not has_amx():
        print("This CPU has no AMX (no amx_bf16 in /proc/cpuinfo): there is only one kernel family to measure.")
        return
    tables = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, isa in KERNELS.items():
            env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
            env |= {} if isa is None else {"ONEDNN_MAX_CPU_ISA": isa}
            out = Path(folder) / f"{name}.parquet"
            subprocess.run([sys.executable, __file__, "--one", str(out), "--models", *models], env=env, check=True)
            tables[name] = pd.read_parquet(out)
    amx, avx = tables.values()
    rows, notes = [], []
    for model in models:
        a, b = (t[t["model"] == model].reset_index(drop=True) for t in (amx, avx))
        for task in TASKS:
            diff = (a[f"delta_{task}"] - b[f"delta_{task}"]).abs()
            width = b[f"delta_{task}_high"] - b[f"delta_{task}_low"]
            rows.append({"model": model, "task": task, "heads": len(diff), "max |ΔΔ|": diff.max(),
                         "median |ΔΔ|": diff.median(), "median |ΔΔ| / CI width": (diff / width).median()})
        for tau in (0.05, 0.03):
            changed = flips(b, a, tau)
            notes.append(f"- {model}, τ = {tau:g}: " + (f"{len(changed)} change (AVX-512 → AMX): " + "; ".join(changed)
                                                       if changed else "no head changes category"))
    print(markdown_table(pd.DataFrame(rows), "{:.3g}"))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()

"""Compare the per-head tables of two runs of the same models and prompts (e.g. a float32 and a
bfloat16 run of ``kedro run --env scale``): per model and task, |ΔΔ| over the heads measured exactly in
both, and every head whose category differs at each τ, with whether its first run's interval
contains τ for each task whose strong flag flipped.

Run: ``python benchmarks/compare_runs.py REFERENCE.parquet OTHER.parquet`` (the ``per_head.parquet``
of each run, under ``data/07_model_output/per_head.parquet/<version>/``); prints Markdown.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ioi_anti.analysis.categories import categorise
from ioi_anti.report.markdown import markdown_table
from ioi_anti.tasks import PAIR as TASKS


def flips(ref: pd.DataFrame, other: pd.DataFrame, tau: float) -> list[str]:
    """Each head whose category differs at τ, with, per flipped task, whether ``ref``'s interval holds ±τ."""
    a, b = categorise(ref, tau), categorise(other, tau)
    notes = []
    for i in np.flatnonzero(a["category"].to_numpy() != b["category"].to_numpy()):
        parts = []
        for task in TASKS:
            if a[f"strong_{task}"].iloc[i] != b[f"strong_{task}"].iloc[i]:
                low, high = a[f"delta_{task}_low"].iloc[i], a[f"delta_{task}_high"].iloc[i]
                straddles = low <= tau <= high or low <= -tau <= high
                column = f"measured_by_{task}"  # screening runs only
                how = f" ({a[column].iloc[i]}/{b[column].iloc[i]})" if column in a else ""
                parts.append(f"{task} {a[f'delta_{task}'].iloc[i]:+.4f} → {b[f'delta_{task}'].iloc[i]:+.4f}{how}, "
                             f"interval [{low:+.3f}, {high:+.3f}] {'contains' if straddles else 'EXCLUDES'} τ")
        notes.append(f"L{a['layer'].iloc[i]}H{a['head'].iloc[i]} {a['category'].iloc[i]} → {b['category'].iloc[i]} "
                     f"({'; '.join(parts)})")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("other")
    parser.add_argument("--taus", nargs="+", type=float, default=[0.05, 0.03])
    args = parser.parse_args()
    keys = ["model", "layer", "head"]
    ref = pd.read_parquet(args.reference).sort_values(keys, ignore_index=True)
    other = pd.read_parquet(args.other).sort_values(keys, ignore_index=True)
    if not ref[keys].equals(other[keys]):
        raise SystemExit("The two tables do not hold the same models and heads.")
    rows, notes = [], []
    for model, idx in ref.groupby("model").groups.items():
        a, b = ref.loc[idx].reset_index(drop=True), other.loc[idx].reset_index(drop=True)
        for task in TASKS:
            both = (a[f"measured_by_{task}"] == "exact") & (b[f"measured_by_{task}"] == "exact")
            diff = (a[f"delta_{task}"] - b[f"delta_{task}"]).abs()[both]
            width = (a[f"delta_{task}_high"] - a[f"delta_{task}_low"])[both]
            rows.append({"model": model, "task": task, "exact in both": int(both.sum()),
                         "exact in one only": int(((a[f"measured_by_{task}"] == "exact") ^
                                                   (b[f"measured_by_{task}"] == "exact")).sum()),
                         "max |ΔΔ|": diff.max(), "median |ΔΔ|": diff.median(),
                         "max |ΔΔ| / CI width": (diff / width).max(),
                         "median |ΔΔ| / CI width": (diff / width).median()})
        for tau in args.taus:
            changed = flips(a, b, tau)
            said = f"{len(changed)} change: " + "; ".join(changed) if changed else "no head changes category"
            notes.append(f"- {model}, τ = {tau:g}: {said}")
    print(markdown_table(pd.DataFrame(rows), "{:.3g}"))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()

"""What any screening rule must cost, from a finished exact run (no model is run).

A screen has to measure every strong head exactly on every prompt of the task it is strong for. A
head at layer L replays blocks L..N-1 on each prompt, so measuring it on a task's prompts costs about
(N - L) x (the task's clean tokens), and the exact sweep costs that summed over every head and both
tasks. From the saved per-head table and tokenised prompts this prints, per model, the share of the
exact sweep that the strong heads alone cost (the floor under any screen, per head and per task),
and what the attribution-margin rule would select at several margins, with the strong heads it
would miss. Also the two-stage exact rule (candidates measured on a random fraction of the prompts
first, the rest only where the subset's mean plus k standard errors reaches τ_min), over ten draws.

Run after a default ``kedro run``: ``python benchmarks/screen_floor.py``; prints Markdown tables for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ioi_anti.measure.sweep import Screen, screen_selection
from ioi_anti.run.validation import project_settings
from ioi_anti.tasks import PAIR as TASKS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _latest(pattern: str) -> Path:
    found = sorted(DATA.glob(pattern))
    if not found:
        raise FileNotFoundError(f"No {pattern} under {DATA}: run `kedro run` first.")
    return found[-1]


def _per_prompt(model: str, prefix: str) -> pd.DataFrame:
    """Exact per-prompt effects of a model's sweep (every layer partition of its fingerprint)."""
    folder = DATA / "07_model_output" / "head_effects_per_prompt" / prefix
    frame = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("layer_*.parquet"))], ignore_index=True)
    return frame[frame["method"] == "exact"]


def _costs(model: str, heads: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per (task, layer, head): the replay cost of measuring it exactly; and the whole sweep's cost."""
    tokens = pd.read_parquet(DATA / "05_model_input" / "tokenised_prompts" / f"{model}.parquet")
    clean = tokens[tokens["role"] == "clean"]
    length = {task: int(clean.loc[clean["task"] == task, "input_ids"].map(len).sum()) for task in TASKS}
    n_layers = int(heads["n_layers"].iloc[0])
    rows = [{"task": task, "layer": layer, "head": head, "cost": (n_layers - layer) * length[task]}
            for task in TASKS for layer, head in zip(heads["layer"], heads["head"], strict=True)]
    cost = pd.DataFrame(rows)
    return cost, float(cost["cost"].sum())


def _selection(heads: pd.DataFrame, screen: Screen) -> dict[str, np.ndarray]:
    """Per task, which rows of ``heads`` the pipeline's screening rule would measure exactly."""
    estimates = pd.concat([heads[["layer", "head"]].assign(task=task, estimate=heads[f"attr_delta_{task}"])
                           for task in TASKS], ignore_index=True)
    chosen = screen_selection(estimates, screen)
    keys = pd.Series(list(zip(heads["layer"], heads["head"], strict=True)))
    return {task: keys.isin(chosen[task]).to_numpy() for task in TASKS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    settings = project_settings(ROOT / "conf")
    rule = settings.head_ablation.screen
    screen = Screen(tau_min=min(settings.categorisation.taus), margin=rule.margin, top_k=rule.top_k)
    per_head = pd.read_parquet(_latest("07_model_output/per_head.parquet/*/per_head.parquet"))
    if (per_head["mode"] != "exact").any():
        raise ValueError("The latest per-head table is from a screening run; this needs an exact run.")
    floor_rows, rule_rows, stage_rows = [], [], []
    for model, heads in per_head.groupby("model", sort=False):
        heads = heads.reset_index(drop=True)
        cost, total = _costs(str(model), heads)
        by_task = {task: cost[cost["task"] == task]["cost"].to_numpy() for task in TASKS}
        strong = {task: (heads[f"delta_{task}"].abs() >= screen.tau_min).to_numpy() for task in TASKS}
        either = strong["ioi"] | strong["anti"]
        floor_rows.append(f"| {model} | {int(either.sum())} of {len(heads)} | "
                          f"{sum(by_task[t][either].sum() for t in TASKS) / total:.1%} | "
                          f"{int(strong['ioi'].sum())} + {int(strong['anti'].sum())} | "
                          f"{sum(by_task[t][strong[t]].sum() for t in TASKS) / total:.1%} |")
        for margin in sorted({screen.margin, 0.02, 0.015, 0.01}, reverse=True):
            chosen = _selection(heads, dataclasses.replace(screen, margin=margin))
            union = chosen["ioi"] | chosen["anti"]
            missed = sum(int((strong[t] & ~chosen[t]).sum()) for t in TASKS)
            rule_rows.append(f"| {model} | {margin} | {sum(by_task[t][union].sum() for t in TASKS) / total:.1%} | "
                             f"{sum(by_task[t][chosen[t]].sum() for t in TASKS) / total:.1%} | {missed} |")
        prefix = max((DATA / "07_model_output" / "head_effects_per_prompt").glob(f"{model}__*"),
                     key=lambda p: p.stat().st_mtime).name
        effects = _per_prompt(str(model), prefix)
        gaps = heads[["gap_ioi", "gap_anti"]].iloc[0].to_dict()
        for fraction, k in ((1 / 2, 3), (1 / 3, 3), (1 / 3, 4)):
            shares, misses = [], []
            for draw in range(10):
                share, miss = _two_stage(effects, heads, cost, total, gaps, screen, fraction, k, draw)
                shares.append(share)
                misses.append(miss)
            stage_rows.append(f"| {model} | {fraction:.2f} | {k} | {np.mean(shares):.1%} | "
                              f"{sum(m > 0 for m in misses)} of 10 |")
    print(f"Strong: exact |Δ| >= τ_min = {screen.tau_min}. Cost: (N - L) x clean tokens of the task, summed.\n")
    print("| model | strong heads (either task) | their share, both tasks measured | strong (IOI + anti) | "
          "share, each task only where strong |\n|---|---|---|---|---|")
    print("\n".join(floor_rows))
    print(f"\nMargin rule (|estimate| >= {screen.tau_min} - margin, or top {screen.top_k} per task):\n")
    print("| model | margin | share, per head (both tasks) | share, per task | strong (head, task) missed |\n"
          "|---|---|---|---|---|")
    print("\n".join(rule_rows))
    print(f"\nTwo-stage exact rule after the margin-{screen.margin} per-task selection (ten random prompt subsets):\n")
    print("| model | fraction first | k (standard errors) | mean share | draws missing a strong head |\n"
          "|---|---|---|---|---|")
    print("\n".join(stage_rows))


def _two_stage(effects: pd.DataFrame, heads: pd.DataFrame, cost: pd.DataFrame, total: float,
               gaps: dict[str, float], screen: Screen, fraction: float, k: float,
               draw: int) -> tuple[float, int]:
    """Cost share and strong (head, task) pairs missed by one draw of the two-stage rule."""
    rng = np.random.default_rng(draw)
    spent, missed = 0.0, 0
    for task in TASKS:
        rows = effects[effects["task"] == task].assign(delta=lambda f, t=task: f["effect"] / gaps[f"gap_{t}"])
        ids = np.sort(rows["pair_id"].unique())
        first = set(rng.choice(ids, max(2, round(fraction * len(ids))), replace=False).tolist())
        chosen = heads[_selection(heads, screen)[task]]
        unit = cost[cost["task"] == task].set_index(["layer", "head"])["cost"] / len(ids)
        for layer, head in zip(chosen["layer"], chosen["head"], strict=True):
            deltas = rows[(rows["layer"] == layer) & (rows["head"] == head)]
            sub = deltas[deltas["pair_id"].isin(first)]["delta"]
            spent += unit[(layer, head)] * len(sub)
            if abs(sub.mean()) + k * sub.std(ddof=1) / np.sqrt(len(sub)) >= screen.tau_min:
                spent += unit[(layer, head)] * (len(deltas) - len(sub))
            elif abs(deltas["delta"].mean()) >= screen.tau_min:
                missed += 1
    return spent / total, missed


if __name__ == "__main__":
    main()

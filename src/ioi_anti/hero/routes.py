"""Where a hero head's effect goes: its decomposition over first readers (:func:`ioi_anti.hero.effects.decompose`)
summed into routes, with a verdict per hero and task. Tables only (no torch), so reports and tests
can use them without a model.

A *route* is the sum, over every later layer, of the parts read first by one kind of reader:
the unembedding (``direct``), the attention heads of one category of the run's pair (point-estimate
category at τ), or the MLPs. The ``remainder`` is ``total - sum of routes``: what needs the hero's output at two
readers at once (and, within a layer, at heads of two categories at once). Each route is given
as Δ (fraction of the task gap) and as a fraction of the hero's total Δ, with percentile bootstrap
intervals over prompts (prompts resampled jointly for the part and the total).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ioi_anti.analysis.categories import PAPER_PAIR, SHARED, Pair
from ioi_anti.measure.metrics import interval
from ioi_anti.params import Verdict

DIRECT, MLPS, REMAINDER = "direct", "MLPs", "remainder"
ACTS_DIRECTLY = "acts directly"
NO_EFFECT, NON_ADDITIVE, MIXED = "no clear effect", "non-additive", "mixed"


def head_route(category: str) -> str:
    """The route through the heads of one category, e.g. ``IOI-only heads``."""
    return f"{category} heads"


def route_names(pair: Pair = PAPER_PAIR) -> tuple[str, ...]:
    """Every route, in table order: direct, the heads of each of the pair's categories, the MLPs."""
    return (DIRECT, *(head_route(category) for category in pair.categories), MLPS)


def route_verdict(route: str) -> str:
    """The verdict naming one route: ``acts directly`` or ``routes through <route>``."""
    return ACTS_DIRECTLY if route == DIRECT else f"routes through {route}"


def part_label(reader: str, layer: int, heads: str) -> str:
    """Name of one reader's part, e.g. ``attention L5 (IOI-only)`` or ``MLP L5``."""
    if reader == "attention":
        return f"attention L{layer} ({heads})"
    return f"MLP L{layer}" if reader == "mlp" else reader


def summarise(parts: Mapping[str, np.ndarray], total: np.ndarray, idx: np.ndarray) -> pd.DataFrame:
    """Mean Δ of each per-prompt part and its fraction of the mean total, both with bootstrap intervals."""
    names = list(parts)
    deltas = np.stack([parts[name] for name in names])
    boot = deltas[:, idx].mean(-1)
    boot_total = total[idx].mean(-1)
    low, high = interval(boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac_low, frac_high = interval(boot / boot_total)
        fraction = deltas.mean(-1) / total.mean()
    return pd.DataFrame({"part": names, "delta": deltas.mean(-1), "delta_low": low, "delta_high": high,
                         "fraction": fraction, "fraction_low": frac_low, "fraction_high": frac_high})


def route_parts(layer_parts: pd.DataFrame, per_prompt: np.ndarray, direct: np.ndarray,
                total: np.ndarray, pair: Pair = PAPER_PAIR) -> dict[str, np.ndarray]:
    """Per-prompt Δ of every route and of the remainder, from the per-layer parts.

    ``layer_parts`` has a row (``reader``, ``heads``) per row of ``per_prompt``: attention rows by
    head category (the ``all heads`` rows are not summed: the categories partition them) and MLP rows.
    """
    routes = {DIRECT: direct}
    for category in pair.categories:
        rows = ((layer_parts["reader"] == "attention") & (layer_parts["heads"] == category)).to_numpy()
        routes[head_route(category)] = per_prompt[rows].sum(0)
    routes[MLPS] = per_prompt[(layer_parts["reader"] == "mlp").to_numpy()].sum(0)
    routes[REMAINDER] = total - sum(routes.values())
    return routes


def verdict(routes: pd.DataFrame, total_low: float, total_high: float, tau: float,
            main_share: float, min_share: float) -> tuple[str, str, float]:
    """The verdict of one hero on one task from its route rows (``part``, ``fraction``, ``fraction_low``).

    No clear effect: the total's interval holds 0 or lies entirely within ±τ. Non-additive: the
    remainder carries at least ``main_share`` of the total. One route: it carries at least
    ``main_share`` and its interval's lower end is at least ``min_share`` (routes that work against
    the total by ``min_share`` or more are named as opposing it). Otherwise mixed, naming every
    route that carries ``min_share`` or more. Returns the verdict, the main route (or "")
    and the main route's fraction (NaN when there is none).
    """
    if (total_low <= 0.0 <= total_high) or max(abs(total_low), abs(total_high)) < tau:
        return NO_EFFECT, "", float("nan")
    by_part = routes.set_index("part")
    if abs(by_part.loc[REMAINDER, "fraction"]) >= main_share:
        return NON_ADDITIVE, REMAINDER, float(by_part.loc[REMAINDER, "fraction"])
    named = by_part.drop(index=REMAINDER)
    main = str(named["fraction"].idxmax())
    share = float(named.loc[main, "fraction"])
    if share >= main_share and named.loc[main, "fraction_low"] >= min_share:
        opposed = named[named["fraction"] <= -min_share]["fraction"]
        against = ", ".join(f"{part} {100 * f:.0f} %" for part, f in opposed.items())
        return route_verdict(main) + (f"; opposed by {against}" if against else ""), main, share
    carried = named[named["fraction"] >= min_share].sort_values("fraction", ascending=False)
    listed = ", ".join(f"{part} {100 * f:.0f} %" for part, f in carried["fraction"].items())
    return (f"{MIXED} ({listed})" if listed else MIXED), main, share


def route_table(decomposition: pd.DataFrame, heroes: pd.DataFrame, tau: float,
                params: Verdict, pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """One row per hero and task: total Δ, verdict, main route, and each route's fraction of the total."""
    rows = []
    keys = ["model", "hero", "task"]
    category = heroes.set_index(["model", "hero"])["category"]
    for (model, hero, task), frame in decomposition.groupby(keys, sort=False):
        total = frame[frame["level"] == "total"].iloc[0]
        routes = frame[frame["level"] == "route"]
        text, main, share = verdict(routes, total["delta_low"], total["delta_high"], tau,
                                    params.main_share, params.min_share)
        row = {"model": model, "hero": hero, "category": category.get((model, hero), ""), "task": task,
               "total": total["delta"], "total_low": total["delta_low"], "total_high": total["delta_high"],
               "verdict": text, "main_route": main, "main_fraction": share}
        rows.append(row | dict(zip(routes["part"], routes["fraction"], strict=True)))
    return pd.DataFrame(rows, columns=[*keys[:2], "category", "task", "total", "total_low", "total_high",
                                       "verdict", "main_route", "main_fraction", *route_names(pair), REMAINDER])


def shared_hero_answers(routes: pd.DataFrame, pair: Pair = PAPER_PAIR) -> pd.DataFrame:
    """For every shared hero: does it do both jobs itself, or route them through other components?"""
    shared = routes[routes["category"] == SHARED]
    labels = {task.name: task.label for task in pair.tasks}
    rows = []
    for (model, hero), frame in shared.groupby(["model", "hero"], sort=False):
        by_task = frame.set_index("task")
        verdicts = {task: str(by_task.loc[task, "verdict"]) for task in labels if task in by_task.index}
        if verdicts and all(v.startswith(ACTS_DIRECTLY) for v in verdicts.values()):
            answer = "does both jobs itself"
        else:
            answer = "; ".join(f"{labels[task]}: {v}" for task, v in verdicts.items())
        rows.append({"model": model, "hero": hero, **{f"verdict_{t}": verdicts.get(t, "") for t in labels},
                     "answer": answer})
    return pd.DataFrame(rows, columns=["model", "hero", *(f"verdict_{t}" for t in labels), "answer"])

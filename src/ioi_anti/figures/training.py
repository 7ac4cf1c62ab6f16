"""Roles across training: figures for runs that hold several checkpoints of one model.

A run names checkpoints as ``<registry id>@<revision>`` (``pythia-160m@step3000``); every table keys
them by that model id, and :func:`ioi_anti.models.checkpoints.parse_model_id` recovers the registry entry
and the training step. A *series* is a registry entry with at least two checkpoints whose revision
names a step; only series are drawn here, and a run without one draws nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ioi_anti.analysis.categories import PAPER_PAIR, Pair
from ioi_anti.figures.style import FigureStyle, ablation_label, new_figure, styled
from ioi_anti.models.checkpoints import parse_model_id

SERIES_STYLES = ("-", "--", ":", "-.")


def with_steps(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``base_model`` and ``training_step`` read from its ``model`` ids."""
    parsed = table["model"].map(parse_model_id)
    return table.assign(base_model=parsed.map(lambda c: c.base_model), training_step=parsed.map(
        lambda c: c.training_step))


def series(table: pd.DataFrame) -> list[str]:
    """Registry entries with at least two checkpoints at known training steps, in order of size."""
    steps = with_steps(table).dropna(subset=["training_step"])
    counts = steps.groupby("base_model")["training_step"].nunique()
    sizes = steps.groupby("base_model")["n_params"].first()
    return sorted(counts[counts >= 2].index, key=lambda m: sizes[m])


def final_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the last checkpoint of each registry entry (the default weights when listed), for the
    cross-scale figures, where several checkpoints of one size would be drawn on top of each other."""
    marked = with_steps(table)
    order = marked["training_step"].fillna(np.inf)  # the default weights are the end of training
    last = marked.assign(_order=order).groupby("base_model")["_order"].transform("max")
    return table[(order == last).to_numpy()]


def _step_axis(ax: Axes) -> None:
    """Training steps on a log axis that still shows step 0 (linear below 1)."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step (symmetric-log axis)")


def training_dynamics(corr: pd.DataFrame, counts: pd.DataFrame, heads: pd.DataFrame, heroes: pd.DataFrame,
                      tau: float, style: FigureStyle | None = None, pair: Pair = PAPER_PAIR) -> Figure:
    """Across training, per series: the correlation of the pair's Δ (Δ_IOI–Δ_anti) with its interval,
    strong-head counts per category at τ, and the Δ trajectories of the final checkpoint's hero heads."""
    style = style or FigureStyle()
    names = series(corr)
    if not names:
        raise ValueError("No model has two or more checkpoints at known training steps: nothing to draw.")
    corr, counts, heads = with_steps(corr), with_steps(counts), with_steps(heads)
    with styled(style):
        fig = new_figure(style.width_in, style.panel_height_in * 3 + 1.2)
        grid = fig.add_gridspec(3, len(names))
        ax_corr, ax_count = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :])
        for name, line in zip(names, SERIES_STYLES * len(names), strict=False):
            rows = corr[corr["base_model"] == name].sort_values("training_step")
            ax_corr.plot(rows["training_step"], rows["pearson"], line, marker="o", markersize=3, color="#333333",
                         label=name)
            ax_corr.fill_between(rows["training_step"], rows["pearson_low"], rows["pearson_high"], color="#333333",
                                 alpha=0.12, linewidth=0)
            for category in pair.strong_categories:
                rows = counts[(counts["base_model"] == name) & (counts["category"] == category)]
                rows = rows.sort_values("training_step")
                ax_count.plot(rows["training_step"], rows["count"], line, marker="o", markersize=3,
                              color=pair.colours[category], label=f"{category}, {name}")
        ax_corr.axhline(0, color="#777777", linewidth=0.8, linestyle=":")
        dx, dy = (pair.delta_name(name) for name in pair.names)
        ax_corr.set_ylabel(f"Pearson r of {dx}, {dy}\n(all heads, 95% CI)")
        ax_corr.legend(title="model (line style)", loc="best")
        ax_count.set_ylabel(f"strong heads at τ = {tau:g}")
        ax_count.legend(ncols=len(names), loc="best")
        for ax in (ax_corr, ax_count):
            _step_axis(ax)
        for column, name in enumerate(names):
            _hero_panel(fig.add_subplot(grid[2, column]), name, heads, heroes, pair)
        fig.suptitle(f"Roles across training ({ablation_label(corr)} ablation, τ = {tau:g})")
    return fig


def _hero_panel(ax: Axes, name: str, heads: pd.DataFrame, heroes: pd.DataFrame, pair: Pair) -> None:
    """The pair's Δ (solid: x, e.g. IOI; dashed: y) of the final checkpoint's hero heads, at every checkpoint."""
    rows = heads[(heads["base_model"] == name)].dropna(subset=["training_step"])
    final = rows.loc[rows["training_step"].idxmax(), "model"]
    chosen = heroes[heroes["model"] == final] if not heroes.empty else heroes
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
    for colour, hero in zip(colours * 4, chosen.itertuples(), strict=False):
        path = rows[(rows["layer"] == hero.layer) & (rows["head"] == hero.head)].sort_values("training_step")
        ax.plot(path["training_step"], path[f"delta_{pair.x.name}"], "-", color=colour,
                label=f"L{hero.layer}H{hero.head}")
        ax.plot(path["training_step"], path[f"delta_{pair.y.name}"], "--", color=colour)
    ax.axhline(0, color="#777777", linewidth=0.8, linestyle=":")
    _step_axis(ax)
    ax.set_ylabel(f"Δ (solid: {pair.x.short}, dashed: {pair.y.short})")
    ax.set_title(f"{name}: heroes of {final.partition('@')[2] or 'the final weights'}")
    if chosen.empty:
        ax.text(0.5, 0.5, "no hero heads at the final checkpoint", transform=ax.transAxes, ha="center")
    else:
        ax.legend(fontsize="small", loc="best")

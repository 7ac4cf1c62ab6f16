"""Figures of the hero-head case studies (same style and palette as :mod:`ioi_anti.plotting`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ioi_anti.plotting import CATEGORY_COLOURS, FigureStyle, new_figure, styled

TASK_COLOURS = {"ioi": CATEGORY_COLOURS["IOI-only"], "anti": CATEGORY_COLOURS["anti-only"]}
TASK_LABELS = {"ioi": "IOI", "anti": "anti-repetition"}
DELTA_LABEL = "Δ (fraction of task gap)"


def _panels(n: int, style: FigureStyle, ncols: int = 3) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = new_figure(style.width_in, style.panel_height_in * nrows + 0.6)
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _empty(style: FigureStyle, title: str) -> Figure:
    fig = new_figure(style.width_in, style.panel_height_in)
    ax = fig.subplots()
    ax.text(0.5, 0.5, "no hero heads in this run\n(no head's interval clears τ)", ha="center", va="center")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def _hero_title(model: str, hero: str, category: str) -> str:
    return f"{model} {hero} ({category})"


def dose_response(dose: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle) -> Figure:
    """Delta of both tasks as each hero head is moved from clean (0) to ablated (1)."""
    title = "Dose-response: hero head z moved from clean to its ablation value"
    with styled(style):
        if dose.empty:
            return _empty(style, title)
        fig, axes = _panels(len(heroes), style)
        for ax, row in zip(axes, heroes.itertuples(), strict=True):
            rows = dose[(dose["model"] == row.model) & (dose["hero"] == row.hero)]
            for task, curve in rows.groupby("task", sort=False):
                ax.plot(curve["alpha"], curve["delta"], marker="o", ms=3, color=TASK_COLOURS[task],
                        label=TASK_LABELS[task])
                ax.fill_between(curve["alpha"], curve["delta_low"], curve["delta_high"], color=TASK_COLOURS[task],
                                alpha=0.2, lw=0)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set(title=_hero_title(row.model, row.hero, row.category), xlabel="ablation fraction α",
                   ylabel=DELTA_LABEL)
        axes[0].legend(loc="best")
        fig.suptitle(title)
    return fig


def topk(curves: pd.DataFrame, style: FigureStyle) -> Figure:
    """Delta of both tasks as the top-k heads of each category are ablated together."""
    title = "Cumulative ablation of the top-k heads of each category"
    with styled(style):
        if curves.empty:
            return _empty(style, title)
        keys = list(curves.groupby(["model", "category"], sort=False).groups)
        fig, axes = _panels(len(keys), style)
        for ax, (model, category) in zip(axes, keys, strict=True):
            rows = curves[(curves["model"] == model) & (curves["category"] == category)]
            for task, curve in rows.groupby("task", sort=False):
                ax.errorbar(curve["k"], curve["delta"], yerr=[curve["delta"] - curve["delta_low"],
                            curve["delta_high"] - curve["delta"]], marker="o", ms=3, capsize=2,
                            color=TASK_COLOURS[task], label=TASK_LABELS[task])
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_xticks(sorted(rows["k"].unique()))
            ax.set(title=f"{model}: top-k {category} heads", xlabel="k (heads ablated together)",
                   ylabel=DELTA_LABEL)
        axes[0].legend(loc="best")
        fig.suptitle(title)
    return fig


def paths(table: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle, max_receivers: int = 8) -> Figure:
    """Total, direct and per-receiver path-patching effects of each hero head, both tasks."""
    title = "Path patching: where each hero head's effect goes"
    with styled(style):
        if table.empty:
            return _empty(style, title)
        fig, axes = _panels(len(heroes), style, ncols=2)
        for ax, row in zip(axes, heroes.itertuples(), strict=True):
            rows = table[(table["model"] == row.model) & (table["hero"] == row.hero)]
            fixed = ["total", "direct", "all paths"]
            receivers = rows[~rows["path"].isin(fixed)]
            top = (receivers.assign(size=receivers["delta"].abs()).groupby("path")["size"].max()
                   .nlargest(max_receivers).index.tolist())
            order = fixed + top
            y = np.arange(len(order))
            for i, (task, frame) in enumerate(rows.groupby("task", sort=False)):
                frame = frame.set_index("path").reindex(order)
                err = [frame["delta"] - frame["delta_low"], frame["delta_high"] - frame["delta"]]
                ax.barh(y + (i - 0.5) * 0.38, frame["delta"], height=0.38, xerr=err, color=TASK_COLOURS[task],
                        label=TASK_LABELS[task], error_kw={"lw": 0.6, "capsize": 1.5})
            ax.set_yticks(y, order)
            ax.invert_yaxis()
            ax.axvline(0, color="grey", lw=0.6)
            ax.set(title=_hero_title(row.model, row.hero, row.category), xlabel=DELTA_LABEL)
        axes[0].legend(loc="best")
        fig.suptitle(title + "\n(receiver paths: the hero's output added only to that head's q, k or v input)")
    return fig


def attention(table: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle) -> Figure:
    """Mean attention from END of each hero head to the IOI names and the in-context list items."""
    title = "Where hero heads attend from the END token"
    with styled(style):
        if table.empty:
            return _empty(style, title)
        fig, axes = _panels(len(heroes), style)
        for ax, row in zip(axes, heroes.itertuples(), strict=True):
            rows = table[(table["model"] == row.model) & (table["hero"] == row.hero)]
            colours = [TASK_COLOURS[t] for t in rows["task"]]
            ax.bar(np.arange(len(rows)), rows["mean"], yerr=rows["std"], color=colours, error_kw={"lw": 0.6})
            ax.set_xticks(np.arange(len(rows)), rows["target"], rotation=30, ha="right")
            ax.set(title=_hero_title(row.model, row.hero, row.category), ylabel="attention weight", ylim=(0, 1))
        fig.suptitle(title + " (blue: IOI prompts, vermilion: list prompts; bars ± 1 s.d.)")
    return fig

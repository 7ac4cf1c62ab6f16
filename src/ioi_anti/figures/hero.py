"""Figures of the hero-head case studies (same style and palette as :mod:`ioi_anti.figures.style`).

Each figure has one panel per hero head (or per model and category), shared axis labels and a task
legend below the panels, so that no legend sits on data.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ioi_anti.analysis.categories import PAPER_PAIR, Pair
from ioi_anti.figures.style import FigureStyle, new_figure, styled
from ioi_anti.hero.routes import DIRECT, MLPS, REMAINDER, head_route, route_names

DELTA_LABEL = "Δ (fraction of task gap; logits in a raw-Δ run)"
NO_HEROES = "no hero heads in this run\n(no head's interval clears τ)"
FIXED_PATHS = ("total", "direct", "all paths")
PATH_ROW_IN = 0.17  # height of one path (two bars) in the path-patching panels
PANEL_EXTRA_IN = 0.75  # panel title, tick labels and padding around a row of panels
DODGE = 0.06  # x offset of the two tasks' points at the same k, so their error bars do not hide each other
ERROR_KW = {"lw": 0.6, "capsize": 1.5, "ecolor": "0.2"}


def _panels(n: int, style: FigureStyle, ncols: int = 3, row_heights: Sequence[float] = ()) -> tuple[Figure, list[Axes]]:
    """``n`` panels in rows of ``ncols`` (unused slots hidden), plus 1 in of height for titles and legend."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    heights = list(row_heights) or [style.panel_height_in] * nrows
    fig = new_figure(style.width_in, sum(heights) + 1.0)
    axes = list(fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": heights}).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _empty(style: FigureStyle, title: str, message: str = NO_HEROES) -> Figure:
    fig = new_figure(style.width_in, style.panel_height_in)
    ax = fig.subplots()
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def _hero_title(row: Any) -> str:
    """Two-line panel title: model, then head, category and whether it was named in config."""
    named = ", named" if getattr(row, "selected_by", "") == "named" else ""
    return f"{row.model}\n{row.hero} ({row.category}{named})"


def _finish(fig: Figure, axes: list[Axes], title: str, xlabel: str, ylabel: str, handles: list[Artist]) -> None:
    """Suptitle, x label under each column's lowest panel, shared y label (none for "") and a legend below."""
    fig.suptitle(title)
    ncols = axes[0].get_subplotspec().get_gridspec().ncols
    for i, ax in enumerate(axes):
        if ax.axison and (i + ncols >= len(axes) or not axes[i + ncols].axison):
            ax.set_xlabel(xlabel)
    if ylabel:
        fig.supylabel(ylabel)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))


def _task_lines(pair: Pair) -> list[Artist]:
    return [Line2D([], [], color=pair.task_colours[t.name], marker="o", ms=3, label=t.label) for t in pair.tasks]


def _task_patches(pair: Pair, suffix: str = "") -> list[Artist]:
    return [Patch(color=pair.task_colours[t.name], label=t.label + suffix) for t in pair.tasks]


def _errors(frame: pd.DataFrame) -> np.ndarray:
    """Distances from ``delta`` to its interval ends, clipped at 0 (matplotlib rejects negative errors)."""
    return np.clip([frame["delta"] - frame["delta_low"], frame["delta_high"] - frame["delta"]], 0, None)


def dose_response(dose: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle, pair: Pair = PAPER_PAIR) -> Figure:
    """Delta of both tasks of the pair as each hero head is moved from clean (0) to ablated (1)."""
    colours = pair.task_colours
    title = "Dose-response: hero head z moved from clean to its ablation value"
    with styled(style):
        if dose.empty or heroes.empty:
            return _empty(style, title)
        fig, axes = _panels(len(heroes), style)
        for ax, row in zip(axes, heroes.itertuples(), strict=True):
            rows = dose[(dose["model"] == row.model) & (dose["hero"] == row.hero)]
            for task, curve in rows.groupby("task", sort=False):
                ax.plot(curve["alpha"], curve["delta"], marker="o", ms=3, color=colours[task])
                ax.fill_between(curve["alpha"], curve["delta_low"], curve["delta_high"], color=colours[task],
                                alpha=0.2, lw=0)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_xticks([0, 0.5, 1], ["0\nclean", "0.5", "1\nablated"])
            ax.set_title(_hero_title(row))
        _finish(fig, axes, title + "\n(shaded: 95% bootstrap interval over prompts)",
                "ablation fraction α", DELTA_LABEL, _task_lines(pair))
    return fig


def topk(curves: pd.DataFrame, style: FigureStyle, pair: Pair = PAPER_PAIR) -> Figure:
    """Delta of both tasks as the top-k heads of each category are ablated together."""
    colours = pair.task_colours
    title = "Cumulative ablation of the top-k heads of each category"
    with styled(style):
        if curves.empty:
            return _empty(style, title, "no strong heads in any category\nof a model with hero heads")
        present = set(curves["category"])
        categories = [c for c in pair.strong_categories if c in present]
        models = list(dict.fromkeys(curves["model"]))
        fig, axes = _panels(len(models) * len(categories), style, ncols=len(categories))
        for i, model in enumerate(models):
            for ax, category in zip(axes[i * len(categories):], categories, strict=False):
                rows = curves[(curves["model"] == model) & (curves["category"] == category)]
                ax.set_title(f"{model}\ntop-k {category} heads")
                if rows.empty:
                    ax.text(0.5, 0.5, f"no {category} heads", ha="center", va="center", transform=ax.transAxes)
                    ax.set_axis_off()
                    continue
                for j, (task, curve) in enumerate(rows.groupby("task", sort=False)):
                    ax.errorbar(curve["k"] + (j - 0.5) * 2 * DODGE, curve["delta"], yerr=_errors(curve), marker="o",
                                ms=3, color=colours[task], elinewidth=0.8, capsize=2)
                ax.axhline(0, color="grey", lw=0.6)
                ks = sorted(rows["k"].unique())
                ax.set_xticks(ks)
                ax.set_xlim(min(ks) - 0.5, max(ks) + 0.5)
        _finish(fig, axes, title + "\n(bars: 95% bootstrap interval over prompts)", "k (heads ablated together)",
                DELTA_LABEL, _task_lines(pair))
    return fig


def _path_label(path: str, category: str, pair: Pair) -> str:
    return path if path in FIXED_PATHS else f"{path} ({pair.short_category(category)})"


def paths(table: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle, max_receivers: int = 8,
          pair: Pair = PAPER_PAIR) -> Figure:
    """Total, direct and per-receiver path-patching effects of each hero head, both tasks."""
    colours = pair.task_colours
    title = "Path patching: where each hero head's effect goes"
    with styled(style):
        if table.empty or heroes.empty:
            return _empty(style, title)
        orders = []
        for row in heroes.itertuples():
            rows = table[(table["model"] == row.model) & (table["hero"] == row.hero)]
            receivers = rows[~rows["path"].isin(FIXED_PATHS)]
            top = receivers.assign(size=receivers["delta"].abs()).groupby("path")["size"].max().nlargest(max_receivers)
            orders.append((row, rows, [*FIXED_PATHS, *top.index]))
        ncols = 2
        # every panel of a row gets the row's largest number of paths, so bars are equally thick
        n_rows = [max(len(o) for _, _, o in orders[i - i % ncols:i - i % ncols + ncols]) for i in range(len(orders))]
        heights = [PATH_ROW_IN * n + PANEL_EXTRA_IN for n in n_rows[::ncols]]
        fig, axes = _panels(len(orders), style, ncols=ncols, row_heights=heights)
        for ax, (row, rows, order), n in zip(axes, orders, n_rows, strict=True):
            y = np.arange(len(order))
            for i, (task, frame) in enumerate(rows.groupby("task", sort=False)):
                frame = frame.drop_duplicates("path").set_index("path").reindex(order)
                ax.barh(y + (i - 0.5) * 0.4, frame["delta"], height=0.4, xerr=_errors(frame), color=colours[task],
                        error_kw=ERROR_KW)
            categories = rows.drop_duplicates("path").set_index("path")["receiver_category"].reindex(order)
            ax.set_yticks(y, [_path_label(p, c, pair) for p, c in zip(order, categories, strict=True)])
            ax.set_ylim(n - 0.5, -0.5)
            if len(order) > len(FIXED_PATHS):
                ax.axhline(len(FIXED_PATHS) - 0.5, color="0.6", lw=0.6, ls=":")
            ax.axvline(0, color="grey", lw=0.6)
            ax.set_title(_hero_title(row))
        _finish(fig, axes, title + "\n(below the dotted line: the hero's output added only to the q, k or v input\n"
                "of one downstream head, its category in brackets; bars: 95% bootstrap interval)",
                DELTA_LABEL, "", _task_patches(pair))
    return fig


def _target_label(target: str) -> str:
    """Tick label of an attention target on two short lines: "all list items" -> "all\\nitems"."""
    return "\n".join(textwrap.wrap(target.replace(" list ", " "), 7, break_long_words=False))


def attention(table: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle, pair: Pair = PAPER_PAIR) -> Figure:
    """Mean attention from END of each hero head to the positions each task of the pair names (the IOI names,
    the in-context list items, ...)."""
    colours = pair.task_colours
    title = "Where hero heads attend from the END token"
    with styled(style):
        if table.empty or heroes.empty:
            return _empty(style, title)
        fig, axes = _panels(len(heroes), style)
        for ax, row in zip(axes, heroes.itertuples(), strict=True):
            rows = table[(table["model"] == row.model) & (table["hero"] == row.hero)]
            x = np.arange(len(rows)) + 0.6 * (rows["task"] == pair.y.name).to_numpy()  # a gap between the two tasks
            mean, std = rows["mean"].to_numpy(), rows["std"].fillna(0).to_numpy()
            err = [np.minimum(std, mean), np.minimum(std, 1 - mean)]
            ax.bar(x, mean, yerr=err, color=[colours[t] for t in rows["task"]], error_kw=ERROR_KW)
            ax.set_xticks(x, [_target_label(t) for t in rows["target"]])
            ax.set(title=_hero_title(row), ylim=(0, 1))
        _finish(fig, axes, title + "\n(mean over prompts ± 1 s.d., clipped to [0, 1])", "attended token(s)",
                "attention weight from END", _task_patches(pair, " prompts"))
    return fig


# Okabe–Ito colours for the MLPs and the per-layer attention bars, the first two the pair's categories leave free
READER_PALETTE = ("#CC79A7", "#56B4E9", "#E69F00", "#F0E442", "#0072B2", "#D55E00")


def reader_colours(pair: Pair) -> dict[str, str]:
    """Colours of the per-layer reader bars (attention, MLP), none of them a category's."""
    taken = {colour.lower() for colour in pair.colours.values()}
    mlp, attention = [c for c in READER_PALETTE if c.lower() not in taken][:2]
    return {"attention": attention, "MLP": mlp}


def route_colours(pair: Pair) -> dict[str, str]:
    """Colour per route: the heads of a category in the category's colour, the MLPs in one no category has."""
    return {DIRECT: "#000000", MLPS: reader_colours(pair)["MLP"], REMAINDER: "#FFFFFF"} | {
        head_route(category): colour for category, colour in pair.colours.items()}


def _waterfall(ax: Axes, routes: pd.DataFrame, total: pd.Series, pair: Pair) -> None:
    """Each route as a step from the running sum, the remainder closing the gap to the total (last bar)."""
    order, colours = [*route_names(pair), REMAINDER], route_colours(pair)
    frame = routes.set_index("part").reindex(order)
    starts = np.concatenate([[0.0], np.cumsum(frame["delta"].to_numpy())[:-1]])
    y = np.arange(len(order) + 1)
    ax.barh(y[:-1], frame["delta"], left=starts, height=0.6, color=[colours[r] for r in order],
            edgecolor="0.2", linewidth=0.5, hatch=["" if r != REMAINDER else "////" for r in order])
    ends = starts + frame["delta"].to_numpy()
    ax.errorbar(ends, y[:-1], xerr=_errors(frame), fmt="none", **ERROR_KW)
    ax.barh(y[-1], total["delta"], height=0.6, color="0.45", edgecolor="0.2", linewidth=0.5)
    ax.errorbar([total["delta"]], [y[-1]], xerr=_errors(total.to_frame().T), fmt="none", **ERROR_KW)
    labels = [f"{r} ({100 * f:.0f} %)" if np.isfinite(f) else r for r, f in zip(order, frame["fraction"], strict=True)]
    ax.set_yticks(y, [*labels, "total"])
    ax.set_ylim(len(order) + 0.5, -0.5)
    ax.axvline(0, color="grey", lw=0.6)


def _by_layer(ax: Axes, layers: pd.DataFrame, hero_layer: int, pair: Pair) -> None:
    """Parts read by each later layer's attention (all heads) and MLP, side by side."""
    for i, (reader, colour) in enumerate(zip(("attention", "mlp"), reader_colours(pair).values(), strict=True)):
        rows = layers[(layers["reader"] == reader) & (layers["heads"].isin(["all heads", ""]))]
        ax.bar(rows["reader_layer"] + (i - 0.5) * 0.4, rows["delta"], width=0.4, yerr=_errors(rows),
               color=colour, error_kw=ERROR_KW)
    ax.axvline(hero_layer, color="0.5", lw=0.6, ls=":")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("reader layer (dotted: the hero's layer)")
    ax.set_title("the same, by the layer that reads it", fontsize="small")


def decomposition(table: pd.DataFrame, hero_routes: pd.DataFrame, heroes: pd.DataFrame, style: FigureStyle,
                  pair: Pair = PAPER_PAIR) -> Figure:
    """One model's heroes: per task, the total Δ built up route by route (the remainder hatched), then by layer."""
    model = str(table["model"].iloc[0])
    title = f"{model}: where each hero head's effect goes (first reader of its output)"
    with styled(style):
        model_heroes = heroes[heroes["model"] == model]
        tasks = [t for t in pair.tasks if t.name in set(table["task"])]
        fig, axes = _panels(2 * len(model_heroes) * len(tasks), style, ncols=len(tasks),
                            row_heights=[style.panel_height_in * 1.2, style.panel_height_in] * len(model_heroes))
        verdicts = hero_routes.set_index(["model", "hero", "task"])["verdict"]
        for i, row in enumerate(model_heroes.itertuples()):
            rows = table[table["hero"] == row.hero]
            for j, task in enumerate(tasks):
                part = rows[rows["task"] == task.name]
                top, bottom = axes[2 * i * len(tasks) + j], axes[(2 * i + 1) * len(tasks) + j]
                _waterfall(top, part[part["level"] == "route"], part[part["level"] == "total"].iloc[0], pair)
                top.set_title(f"{row.hero} ({row.category}), {task.label}\n"
                              + textwrap.fill(str(verdicts.get((model, row.hero, task.name), "")), 48),
                              fontsize="small")
                top.set_xlabel(DELTA_LABEL)
                _by_layer(bottom, part[part["level"] == "layer"], int(row.layer), pair)
                bottom.set_ylabel("Δ")
        colours = route_colours(pair)
        handles = [Patch(facecolor=colours[r], edgecolor="0.2", hatch="////" if r == REMAINDER else "", label=r)
                   for r in [*route_names(pair), REMAINDER]] + [
                   Patch(color=c, label=f"{k} of one layer (layer panels)") for k, c in reader_colours(pair).items()]
        fig.suptitle(title + "\n(bars: 95% bootstrap interval over prompts; % = share of the hero's total Δ)")
        fig.legend(handles=handles, loc="outside lower center", ncols=4)
    return fig

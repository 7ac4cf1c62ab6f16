"""Head roles over every task of a run: per model, an UpSet-style chart of the heads per role signature
(the set of tasks a head is strong on) and the matrix of Δ correlations between tasks.

UpSet drawn by hand on matplotlib axes (bars over a dot matrix) rather than with the ``upsetplot``
package: the figure has to share the report's style, panel grid and colour of each task, which that
package's own figure layout does not allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ioi_anti.figures.style import (
    GAP_WARNING,
    FigureStyle,
    ablation_label,
    figure_title,
    flagged_models,
    model_order,
    new_figure,
    styled,
)

MULTI_TASK_COLOUR = "#009E73"  # as "shared" heads of the pair
ABSENT = "#DDDDDD"


def run_tasks(correlations: pd.DataFrame) -> list[str]:
    """The tasks of a run, in run order, from its task-correlation table."""
    return list(dict.fromkeys([correlations["task_x"].iloc[0], *correlations["task_y"]]))


def _upset(bars: Axes, dots: Axes, rows: pd.DataFrame, tasks: Sequence[str], colours: Mapping[str, str],
           labels: Mapping[str, str], font_size: float) -> None:
    """Bars of heads per signature (solid: robust on every task of it) over the dot matrix of its tasks."""
    x = np.arange(len(rows))
    members = [set(s.split("+")) for s in rows["signature"]]
    colour = [colours[next(iter(m))] if len(m) == 1 else MULTI_TASK_COLOUR for m in members]
    bars.bar(x, rows["count"], color=colour, alpha=0.4, width=0.7)
    bars.bar(x, rows["n_robust"], color=colour, width=0.7)
    for xi, count in zip(x, rows["count"], strict=True):
        bars.annotate(str(count), (xi, count), ha="center", va="bottom", fontsize=font_size)
    bars.set_ylabel("heads")
    bars.tick_params(axis="x", bottom=False, labelbottom=False)
    for yi, task in enumerate(tasks):
        inside = np.array([task in m for m in members], dtype=bool)  # bool even for a model with no strong head
        dots.scatter(x[~inside], np.full((~inside).sum(), yi), color=ABSENT, s=18)
        dots.scatter(x[inside], np.full(inside.sum(), yi), color=colours[task], s=18)
    for xi, m in zip(x, members, strict=True):
        ys = [i for i, t in enumerate(tasks) if t in m]
        dots.plot([xi, xi], [min(ys), max(ys)], color="black", lw=0.8)
    dots.set_yticks(range(len(tasks)), [labels[t] for t in tasks])
    dots.set_ylim(len(tasks) - 0.5, -0.5)
    dots.set_xticks([])
    dots.set_xlabel("role signature: the tasks a head is strong on (dots)")
    dots.set_xlim(-0.6, max(len(rows), 1) - 0.4)
    for side in ("left", "bottom"):
        dots.spines[side].set_visible(False)


def _matrix(ax: Axes, rows: pd.DataFrame, tasks: Sequence[str], labels: Mapping[str, str], font_size: float) -> None:
    """Pearson r between the tasks' Δ over all heads: r above the diagonal, its bootstrap interval below."""
    n = len(tasks)
    r = np.eye(n)
    text = {(i, i): "1" for i in range(n)}
    index = {t: i for i, t in enumerate(tasks)}
    for row in rows.itertuples():
        i, j = sorted((index[row.task_x], index[row.task_y]))
        r[i, j] = r[j, i] = row.pearson
        text[(i, j)] = f"{row.pearson:.2f}"
        text[(j, i)] = f"[{row.pearson_low:.2f},\n{row.pearson_high:.2f}]"
    ax.imshow(r, cmap="RdBu_r", vmin=-1, vmax=1)
    for (i, j), value in text.items():
        ax.text(j, i, value, ha="center", va="center", fontsize=font_size,
                color="white" if abs(r[i, j]) > 0.6 else "black")
    ax.set_xticks(range(n), [labels[t] for t in tasks], rotation=30, ha="right")
    ax.set_yticks(range(n), [labels[t] for t in tasks])
    ax.set_title("Pearson r of Δ (above), 95% CI (below)")


def task_roles(counts: pd.DataFrame, correlations: pd.DataFrame, tau: float, colours: Mapping[str, str],
               labels: Mapping[str, str], style: FigureStyle) -> Figure:
    """Per model (a row): strong heads per role signature at ``tau`` (UpSet-style) and the tasks' Δ
    correlation matrix."""
    tasks = run_tasks(correlations)
    models = model_order(counts)
    with styled(style):
        fig = new_figure(style.width_in, style.panel_height_in * 1.3 * len(models) + 0.4)
        outer = fig.add_gridspec(len(models), 2, width_ratios=[1.7, 1])
        for i, model in enumerate(models):
            rows = counts[(counts["model"] == model) & (counts["signature"] != "none")]
            rows = rows.sort_values(["n_tasks", "count"], ascending=[True, False])
            inner = outer[i, 0].subgridspec(2, 1, height_ratios=[2.2, 0.25 * len(tasks) + 0.3])
            bars = fig.add_subplot(inner[0])
            _upset(bars, fig.add_subplot(inner[1], sharex=bars), rows, tasks, colours, labels, style.font_size)
            own = counts[counts["model"] == model]
            weak = int(own.loc[own["signature"] == "none", "count"].sum())
            flag = "" if bool(own["gap_ok"].iloc[0]) else f" — {GAP_WARNING}"
            bars.set_title(f"{model} ({weak} heads strong on no task){flag}", loc="left")
            _matrix(fig.add_subplot(outer[i, 1]), correlations[correlations["model"] == model], tasks, labels,
                    style.font_size)
        figure_title(fig, f"Head roles over {len(tasks)} tasks ({ablation_label(counts)} ablation, τ = {tau:g}; solid: "
                  "robust on every task of the signature)", flagged_models(counts))
    return fig

"""The study's figures: tables in, matplotlib Figures out (no I/O, no pyplot state): the
correlation and strong-head counts against scale, the phase space of every head, the family grid
and the per-layer histograms.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from ioi_anti.analysis.categories import PAPER_PAIR, WEAK, Pair
from ioi_anti.figures.style import (
    FLAG_COLOUR,
    GAP_WARNING,
    INSTRUCT,
    TUNING_WORDS,
    FigureStyle,
    ablation_label,
    bottom_legend,
    delta_label,
    delta_unit,
    dodged_x,
    family_colour,
    family_handles,
    family_line,
    family_marker,
    family_sizes,
    figure_title,
    flag_handle,
    flag_points,
    flagged_models,
    format_params,
    has_instruct,
    log_params_axis,
    math_delta,
    new_figure,
    ordered_families,
    styled,
    tuning_handles,
)

SCALING_ROWS = ((False, "Strong heads (count)"), (True, "Strong heads (% of all)"))

GRID_MARGIN_IN, GRID_LEGEND_WIDTH_IN = 0.9, 1.9  # room for the family/Δ labels, and for a side legend


def _correlation_limits(corr: pd.DataFrame) -> tuple[float, float]:
    """y range holding 0 and every finite correlation and interval end, within [-1, 1] plus a margin."""
    values = corr[[f"{s}{e}" for s in ("pearson", "spearman") for e in ("", "_low", "_high")]].to_numpy(float)
    finite = np.append(values[np.isfinite(values)], 0.0)
    pad = 0.08 * max(finite.max() - finite.min(), 0.1)
    return max(finite.min() - pad, -1.05), min(finite.max() + pad, 1.05)


def corr_vs_scale_cross_family(corr: pd.DataFrame, style: FigureStyle | None = None,
                               pair: Pair = PAPER_PAIR) -> Figure:
    """Pearson and Spearman correlation of the pair's Δ (Δ_IOI vs Δ_anti) over all heads, against model size.

    A line through the sizes of each family (a lone marker for a family of one size); error bars are
    the bootstrap intervals over heads; hollow markers are instruction-tuned models.
    """
    style = style or FigureStyle()
    flagged = flagged_models(corr)
    families = ordered_families(corr["family"])
    sizes = family_sizes(corr)
    level = float(corr["level"].iloc[0])
    with styled(style):
        fig = new_figure(style.width_in, style.panel_height_in * 1.5 + 0.9)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, stat, name in zip(axes, ("pearson", "spearman"), ("Pearson r", "Spearman ρ"), strict=True):
            ax.axhline(0.0, color="#777777", linewidth=0.8, linestyle=":")
            for family in families:
                rows = corr[corr["family"] == family].sort_values("n_params")
                yerr = np.vstack([rows[stat] - rows[f"{stat}_low"], rows[f"{stat}_high"] - rows[stat]])
                x, colour = dodged_x(rows, families), family_colour(family)
                ax.errorbar(x, rows[stat], yerr=np.clip(yerr, 0, None), color=colour, capsize=2.5, linewidth=1.2,
                            linestyle=family_line(sizes[family]), label=family)
                for tuning, points in rows.groupby("tuning"):
                    ax.plot(x.loc[points.index], points[stat], linestyle="none", color=colour,
                            marker=family_marker(family), markersize=5.5, markeredgewidth=1.2, zorder=3,
                            markerfacecolor="white" if tuning == INSTRUCT else colour, label=f"{family} {tuning}")
            bad = corr[corr["model"].isin(flagged)]
            flag_points(ax, dodged_x(bad, families), bad[stat])
            log_params_axis(ax, corr["n_params"])
            ax.set_title(name)
        x, y = (math_delta(pair, name) for name in pair.names)
        axes[0].set_ylabel(f"Correlation of {x} and {y} over heads")
        axes[0].set_ylim(*_correlation_limits(corr))
        handles = (family_handles(corr, families) + (tuning_handles() if has_instruct(corr) else [])
                   + ([flag_handle()] if flagged else []))
        bottom_legend(fig, handles, style)
        figure_title(
            fig,
            f"Head effects on {pair.x.label} vs {pair.y.label}: correlation over all heads by model size\n"
            f"{ablation_label(corr)} ablation · no τ threshold · {level:.0%} bootstrap CI over heads",
            flagged,
        )
    return fig


def _head_counts(rows: pd.DataFrame, column: str, percent: bool) -> pd.Series:
    """Head counts of ``column``, or their percentage of all the model's heads."""
    return 100 * rows[column] / (rows["n_layers"] * rows["n_heads"]) if percent else rows[column]


def _scaling_panel(ax: Axes, rows: pd.DataFrame, families: list[str], percent: bool) -> None:
    """One category's strong-head curve (solid, filled) and robust subset (dotted, hollow) per family;
    markers only for a family of one size."""
    for family in families:
        fam = rows[rows["family"] == family].sort_values("n_params")
        colour, marker = family_colour(family), family_marker(family)
        x, n_sizes = dodged_x(fam, families), fam["model"].nunique()
        ax.plot(x, _head_counts(fam, "count", percent), color=colour, marker=marker, markersize=5, linewidth=1.2,
                linestyle=family_line(n_sizes), label=family)
        ax.plot(x, _head_counts(fam, "n_robust", percent), color=colour, marker=marker, markersize=5,
                linewidth=1.0, linestyle=family_line(n_sizes, ":"), markerfacecolor="white",
                label=f"{family} (robust)")


def meaningful_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str]:
    """Rows of models with a positive gap, the flagged models and how the title names them.

    Flagged models are left out ("not shown") unless no model has a positive gap, in which case all
    are shown and "flagged": an empty figure would hide the problem rather than show it.
    """
    flagged = flagged_models(table)
    shown = table[~table["model"].isin(flagged)]
    if shown.empty:
        return table, flagged, "flagged"
    return shown, flagged, "not shown"


def strong_head_scaling(counts: pd.DataFrame, tau: float, style: FigureStyle | None = None,
                        pair: Pair = PAPER_PAIR) -> Figure:
    """Strong-head counts (top row) and shares of all heads (bottom row) per category vs model size.

    ``counts`` holds one τ; solid filled markers count all strong heads, dotted hollow ones the
    robust subset whose interval clears τ. Models with a non-positive gap are left out (their
    counts can be arbitrarily large) unless every model is flagged.
    """
    style = style or FigureStyle()
    shown, flagged, verb = meaningful_rows(counts)
    families = ordered_families(shown["family"])
    with styled(style):
        fig = new_figure(style.width_in, 2 * style.panel_height_in + 1.1)
        axes = fig.subplots(2, len(pair.strong_categories), sharex=True, sharey="row")
        for col, category in enumerate(pair.strong_categories):
            rows = shown[shown["category"] == category]
            bad = rows[rows["model"].isin(flagged)]
            for row, (percent, label) in enumerate(SCALING_ROWS):
                ax = axes[row, col]
                _scaling_panel(ax, rows, families, percent)
                flag_points(ax, dodged_x(bad, families), _head_counts(bad, "count", percent))
                log_params_axis(ax, shown["n_params"])
                ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
                if col == 0:
                    ax.set_ylabel(label)
                if row == 0:
                    ax.set_title(category, color=pair.colours[category], fontweight="bold")
                    ax.set_xlabel("")
        strong = shown[shown["category"].isin(pair.strong_categories)]
        for row, (percent, _label) in enumerate(SCALING_ROWS):
            axes[row, 0].set_ylim(0, max(1.0, 1.1 * float(_head_counts(strong, "count", percent).max())))
        handles = family_handles(shown, families, has_instruct(shown)) + (
            [flag_handle()] if verb == "flagged" else [])
        bottom_legend(fig, handles, style)
        figure_title(
            fig,
            f"Strong heads by category vs model size ({ablation_label(counts)} ablation, τ = {tau:g})\n"
            "filled: all strong heads (|Δ| ≥ τ); hollow (dotted): robust subset (95% CI beyond τ)",
            flagged,
            flag_verb=verb,
        )
    return fig


def tau_guides(ax: Axes, tau: float) -> None:
    """Shaded weak box |Δ| < τ on both tasks, dashed lines at ±τ and thin zero lines."""
    ax.add_patch(Rectangle((-tau, -tau), 2 * tau, 2 * tau, facecolor="#EEEEEE", edgecolor="none", zorder=0))
    for value in (-tau, tau):
        ax.axvline(value, color="#888888", linestyle="--", linewidth=0.7, zorder=1)
        ax.axhline(value, color="#888888", linestyle="--", linewidth=0.7, zorder=1)
    ax.axvline(0.0, color="#BBBBBB", linewidth=0.5, zorder=1)
    ax.axhline(0.0, color="#BBBBBB", linewidth=0.5, zorder=1)


def scatter_heads(ax: Axes, heads: pd.DataFrame, marker_of: Callable[[str], str], size: float, pair: Pair) -> None:
    """Heads coloured by category; strong ones filled if robust, hollow if borderline."""
    x, y = (f"delta_{name}" for name in pair.names)
    weak = heads[heads["category"] == WEAK]
    for family, rows in weak.groupby("family"):
        ax.scatter(rows[x], rows[y], s=size * 0.35, marker=marker_of(str(family)),
                   color=pair.colours[WEAK], alpha=0.6, linewidths=0, zorder=2)
    strong = heads[heads["category"] != WEAK]
    for (category, family, borderline), rows in strong.groupby(["category", "family", "borderline"]):
        colour = pair.colours[str(category)]
        ax.scatter(rows[x], rows[y], s=size, marker=marker_of(str(family)),
                   facecolors="none" if borderline else colour, edgecolors=colour, linewidths=0.9, zorder=3)
    moved = quant_sensitive(heads)
    ax.scatter(moved[x], moved[y], s=size * 3.5, marker="o", facecolors="none", edgecolors="black", linewidths=0.7,
               zorder=4, gid="quant_sensitive")  # a ring: unlike any family's marker


def quant_sensitive(heads: pd.DataFrame) -> pd.DataFrame:
    """The heads whose category changes when their model is re-quantised (``quant_sensitive``; none where the
    quantisation pipeline has not measured the model)."""
    if "quant_sensitive" not in heads.columns:
        return heads.iloc[:0]
    return heads[heads["quant_sensitive"].astype("boolean").fillna(False).to_numpy(bool)]


def quant_handles(heads: pd.DataFrame) -> list[Line2D]:
    """The legend entry of the quant-sensitive ring, with its count, where any model was measured re-quantised."""
    if "quant_sensitive" not in heads.columns or heads["quant_sensitive"].isna().all():
        return []
    return [Line2D([], [], marker="o", markersize=9, linestyle="none", markerfacecolor="none", color="black",
                   markeredgewidth=0.7, label=f"quant-sensitive ({len(quant_sensitive(heads))}): ringed,\n"
                                             "category moves if re-quantised")]


def symmetric_limit(values: pd.Series, tau: float) -> float:
    """Half-width of a symmetric axis range holding every value and the ±τ guides."""
    return 1.08 * max(float(np.abs(values).max()) if len(values) else 0.0, 2 * tau)


def category_handles(pair: Pair, heads: pd.DataFrame | None = None) -> list[Line2D]:
    """Category legend entries, with head counts when ``heads`` is given."""
    counts = heads["category"].value_counts() if heads is not None else None
    return [
        Line2D([], [], marker="o", linestyle="none", color=colour,
               label=c if counts is None else f"{c} ({counts.get(c, 0)})")
        for c, colour in pair.colours.items()
    ]


def robust_handles() -> list[Line2D]:
    """Legend entries for the two interval markers (robust: the interval clears τ; borderline: it does not)."""
    return [
        Line2D([], [], marker="o", linestyle="none", color="#444444", label="robust (95% CI beyond τ)"),
        Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="none",
               label="borderline (CI crosses τ)"),
    ]


def all_heads_phase_space(heads: pd.DataFrame, tau: float, style: FigureStyle | None = None,
                          pair: Pair = PAPER_PAIR) -> Figure:
    """The pair's Δ (Δ_IOI vs Δ_anti) for every head of every model at one τ, with the τ bands and weak box.

    Models whose gap is not positive are left out (their Δ are not meaningful) and named in the title,
    unless every model is flagged.
    """
    style = style or FigureStyle()
    shown, flagged, verb = meaningful_rows(heads)
    families = ordered_families(shown["family"])
    with styled(style):
        fig = new_figure(style.width_in, style.width_in * 0.68)
        ax = fig.subplots()
        tau_guides(ax, tau)
        scatter_heads(ax, shown, family_marker, 22, pair)
        x, y = pair.names
        ax.set_xlim(-symmetric_limit(shown[f"delta_{x}"], tau), symmetric_limit(shown[f"delta_{x}"], tau))
        ax.set_ylim(-symmetric_limit(shown[f"delta_{y}"], tau), symmetric_limit(shown[f"delta_{y}"], tau))
        ax.set_xlabel(delta_label(pair, x, unit=delta_unit(shown)))
        ax.set_ylabel(delta_label(pair, y, unit=delta_unit(shown)))
        markers = [
            Line2D([], [], marker=family_marker(f), linestyle="none", color="#444444", label=f) for f in families
        ]
        weak_box = Patch(facecolor="#EEEEEE", edgecolor="#888888", linestyle="--", label=f"weak box (|Δ| < {tau:g})")
        fig.legend(handles=category_handles(pair, shown) + [weak_box], loc="outside right upper",
                   title="Category (heads)")
        fig.legend(handles=markers, loc="outside right center", title="Family")
        fig.legend(handles=robust_handles() + quant_handles(shown), loc="outside right lower", title="Interval")
        n_models = shown["model"].nunique()
        figure_title(fig, f"All {len(shown)} heads of {n_models} model(s): {ablation_label(heads)} ablation, "
                          f"τ = {tau:g}\neffect on {pair.x.label} vs {pair.y.label}", flagged, flag_verb=verb)
    return fig


def _grid_layout(heads: pd.DataFrame) -> list[list[str]]:
    """Models per family row, families in canonical order and models by size."""
    sizes = heads.groupby("model")[["family", "n_params"]].first()
    return [
        list(sizes[sizes["family"] == family].sort_values("n_params").index)
        for family in ordered_families(sizes["family"])
    ]


def _grid_panel(ax: Axes, rows: pd.DataFrame, tau: float, flagged: bool, limits: tuple[float, float],
                pair: Pair) -> None:
    """One model's phase-space panel; a flagged model gets a red warning title."""
    tau_guides(ax, tau)
    scatter_heads(ax, rows, lambda _family: "o", 10, pair)
    first = rows.iloc[0]
    instruct = ", instruct" if first["tuning"] == INSTRUCT else ""
    title = f"{first['model']} ({format_params(first['n_params'])}{instruct})"
    x, y = (rows[f"delta_{name}"].abs() for name in pair.names)
    outside = int(((x > limits[0]) | (y > limits[1])).sum())
    if outside:
        title += f"\n{outside} head(s) off-axis"
    if flagged:
        title += f"\n{GAP_WARNING}"
    ax.set_title(title, color=FLAG_COLOUR if flagged else "black", fontsize=ax.xaxis.label.get_size())


def _grid_size(layout: list[list[str]], style: FigureStyle) -> tuple[float, float]:
    """Figure width and height for near-square panels, with a legend column when no grid slot is free."""
    n_rows, n_cols = len(layout), max(len(row) for row in layout)
    legend_width = 0.0 if any(len(row) < n_cols for row in layout) else GRID_LEGEND_WIDTH_IN
    panel = min((style.width_in - GRID_MARGIN_IN - legend_width) / n_cols, style.panel_height_in)
    width = max(n_cols * panel + GRID_MARGIN_IN + legend_width, 4.5)
    return width, n_rows * (panel + 0.4) + 0.9


def family_grid(heads: pd.DataFrame, tau: float, style: FigureStyle | None = None, pair: Pair = PAPER_PAIR) -> Figure:
    """The phase space with one panel per model, a row per family, shared axes.

    Axis limits come from the models with a positive gap, so a flagged model cannot squash the rest.
    The legend goes into the first empty grid slot, or to the right when the grid is full.
    """
    style = style or FigureStyle()
    layout = _grid_layout(heads)
    flagged = flagged_models(heads)
    reference = heads[~heads["model"].isin(flagged)]
    reference = heads if reference.empty else reference
    limits = tuple(symmetric_limit(reference[f"delta_{name}"], tau) for name in pair.names)
    width, height = _grid_size(layout, style)
    with styled(style):
        fig = new_figure(width, height)
        axes = fig.subplots(len(layout), max(len(row) for row in layout), sharex=True, sharey=True, squeeze=False)
        free = []
        for r, models in enumerate(layout):
            for c, ax in enumerate(axes[r]):
                if c >= len(models):
                    ax.axis("off")
                    free.append(ax)
                    continue
                _grid_panel(ax, heads[heads["model"] == models[c]], tau, models[c] in flagged, limits, pair)
                ax.set_xlim(-limits[0], limits[0])
                ax.set_ylim(-limits[1], limits[1])
                ax.xaxis.set_tick_params(labelbottom=True)
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
                ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
            family = heads.loc[heads["model"] == models[0], "family"].iloc[0]
            axes[r, 0].set_ylabel(family, fontweight="bold", color=family_colour(family))
        fig.supxlabel(delta_label(pair, pair.x.name, hint=False, unit=delta_unit(heads)))
        fig.supylabel(delta_label(pair, pair.y.name, hint=False, unit=delta_unit(heads)))
        handles = category_handles(pair) + robust_handles() + quant_handles(heads)
        if free:
            free[0].legend(handles=handles, loc="center")
        else:
            fig.legend(handles=handles, loc="outside right center")
        figure_title(fig, f"Heads per model, by family ({ablation_label(heads)} ablation, τ = {tau:g})", flagged)
    return fig


def layer_hist(counts: pd.DataFrame, tau: float, style: FigureStyle | None = None, pair: Pair = PAPER_PAIR) -> Figure:
    """Stacked strong-head counts per layer for one model at one τ (weak heads omitted)."""
    style = style or FigureStyle()
    first = counts.iloc[0]
    n_layers, n_heads = int(first["n_layers"]), int(first["n_heads"])
    table = counts.pivot_table(index="layer", columns="category", values="count", aggfunc="sum")
    table = table.reindex(index=range(n_layers), columns=list(pair.strong_categories), fill_value=0).fillna(0)
    with styled(style):
        fig = new_figure(style.width_in, style.panel_height_in + 1.0)
        ax = fig.subplots()
        bottom = np.zeros(n_layers)
        for category in pair.strong_categories:
            values = table[category].to_numpy(float)
            ax.bar(table.index, values, bottom=bottom, color=pair.colours[category], width=0.8,
                   label=f"{category} ({int(values.sum())})")
            bottom += values
        if bottom.sum() == 0:
            ax.text(0.5, 0.5, f"no strong heads at τ = {tau:g}", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlim(-0.6, n_layers - 0.4)
        ax.set_ylim(0, max(bottom.max() * 1.1, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(n_layers, 16)))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Layer")
        ax.set_ylabel(f"Strong heads (count, of {n_heads}/layer)")
        if n_layers > 1:
            depth = ax.secondary_xaxis("top", functions=(lambda x: x / (n_layers - 1), lambda f: f * (n_layers - 1)))
            depth.set_xlabel("Depth fraction")
        fig.legend(loc="outside right upper", title="Category (heads)")
        gap_ok = bool(first["gap_ok"])
        title = (f"{first['model']}: strong heads by layer\n{first['family']}, "
                 f"{TUNING_WORDS.get(first['tuning'], first['tuning'])}, {format_params(first['n_params'])} · "
                 f"{ablation_label(counts)} ablation, τ = {tau:g}")
        fig.suptitle(title if gap_ok else f"{title}\n{GAP_WARNING}", color="black" if gap_ok else FLAG_COLOUR)
    return fig

"""Figures of the toy models: roles against the objective mix, their phase space, their training."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ioi_anti.figures.study import category_handles, robust_handles, scatter_heads, symmetric_limit, tau_guides
from ioi_anti.figures.style import FigureStyle, delta_label, new_figure, styled
from ioi_anti.toy.roles import TOY_PAIR

SIZE_COLOURS = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#CC79A7")
TASK_LINES = {"toy_ioi": "-", "toy_anti": "--"}
KIND_LINES = {"ioi": "-", "list": "--", "copy": ":"}
KINDS = {"ioi": "IOI-like", "list": "list (new item next)", "copy": "copy (listed item next)"}


def _sizes(table: pd.DataFrame) -> dict[str, str]:
    return {size: SIZE_COLOURS[i % len(SIZE_COLOURS)] for i, size in enumerate(dict.fromkeys(table["size"]))}


def _band(ax, rows: pd.DataFrame, column: str, colour: str, line: str, label: str | None) -> None:
    """A mean over seeds against the mix, with its interval over seeds as error bars."""
    err = np.clip([rows[column] - rows[f"{column}_low"], rows[f"{column}_high"] - rows[column]], 0, None)
    ax.errorbar(rows["mix"], rows[column], yerr=err, color=colour, linestyle=line, marker="o", ms=3.5, capsize=2,
                label=label)


def roles_against_mix(summary: pd.DataFrame, per_model: pd.DataFrame, accuracy: pd.DataFrame, learned_accuracy: float,
                      style: FigureStyle) -> Figure:
    """Four panels against the mix λ (share of IOI-like training sequences), a colour per model size:
    held-out accuracy per kind, strong heads per learned task, the shared share of strong heads, and the
    Pearson r of Δ_toy_ioi with Δ_toy_anti. Means over the seeds kept, with 95 % intervals over seeds; each
    model a small dot, a model that falls short of a task it was trained on a cross (left out of the means)."""
    colours = _sizes(summary)
    with styled(style):
        fig = new_figure(style.width_in, 2 * style.panel_height_in + 1.6)
        axes = fig.subplots(2, 2, sharex=True).ravel()
        acc = accuracy.groupby(["size", "mix", "kind"])["accuracy"].agg(["mean", "min", "max"]).reset_index()
        for size, colour in colours.items():
            for kind, line in KIND_LINES.items():
                rows = acc[(acc["size"] == size) & (acc["kind"] == kind)]
                spread = np.clip([rows["mean"] - rows["min"], rows["max"] - rows["mean"]], 0, None)
                axes[0].errorbar(rows["mix"], rows["mean"], yerr=spread, color=colour, linestyle=line, marker="o",
                                 ms=3.5, capsize=2)
            rows = summary[summary["size"] == size]
            for task, line in TASK_LINES.items():
                _band(axes[1], rows.dropna(subset=[f"n_strong_{task}"]), f"n_strong_{task}", colour, line, None)
            _band(axes[2], rows.dropna(subset=["shared_fraction"]), "shared_fraction", colour, "-", size)
            _band(axes[3], rows.dropna(subset=["pearson"]), "pearson", colour, "-", None)
            models = per_model[per_model["size"] == size]
            for ax, column in ((axes[2], "shared_fraction"), (axes[3], "pearson")):
                for short, marker in ((False, "."), (True, "x")):
                    dots = models[models["falls_short"] == short]
                    ax.scatter(dots["mix"], dots[column], color=colour, marker=marker, s=14 if short else 6,
                               alpha=0.5, linewidths=0.8)
        axes[0].axhline(learned_accuracy, color="#888888", linewidth=0.7)
        axes[0].set(ylabel=f"held-out top-1 accuracy\n(range over seeds; grey: learned at {learned_accuracy:g})",
                    ylim=(-0.02, 1.02))
        top = np.nan_to_num(summary[["n_strong_toy_ioi", "n_strong_toy_anti"]].max().max())
        axes[1].set(ylabel="strong heads (|Δ| ≥ τ)\nper learned task", ylim=(0, 1.6 * top + 1))
        axes[2].set(ylabel="shared heads / strong heads", ylim=(-0.02, 1.02))
        axes[3].set(ylabel="Pearson r of Δ_toy_IOI,\nΔ_toy_anti (all heads)", ylim=(-1.05, 1.05))
        axes[3].axhline(0, color="#888888", linewidth=0.7, linestyle=":")
        for ax in axes[2:]:
            ax.set_xlabel("λ: share of IOI-like training sequences")
        handles = [Line2D([], [], color=c, marker="o", label=f"{size} model") for size, c in colours.items()] + [
            Line2D([], [], color="#444444", linestyle=line, label=label)
            for line, label in (("-", "toy IOI / IOI-like"), ("--", "toy anti / list"), (":", "copy"))] + [
            Line2D([], [], color="#444444", marker="x", linestyle="", label="falls short (left out)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3)
        fig.suptitle("Toy models: head roles against the objective mix\n(mean over the seeds kept; bars: 95 % "
                     "bootstrap (counts, shares) or Fisher-z (r) intervals over seeds; a task counts where learned)")
    return fig


def phase_space(heads: pd.DataFrame, tau: float, style: FigureStyle) -> Figure:
    """Δ_toy_IOI vs Δ_toy_anti of one seed's models: a row per size, a panel per mix (categories at τ;
    a task not learned by a model is marked in its panel's title)."""
    sizes = list(dict.fromkeys(heads["size"]))
    mixes = sorted(heads["mix"].unique())
    x, y = TOY_PAIR.names
    limits = tuple(symmetric_limit(heads[f"delta_{name}"].clip(-2, 2), tau) for name in (x, y))
    with styled(style):
        panel = min((style.width_in - 1.0) / len(mixes), style.panel_height_in)
        fig = new_figure(style.width_in, len(sizes) * (panel + 0.5) + 1.4)
        axes = fig.subplots(len(sizes), len(mixes), sharex=True, sharey=True, squeeze=False)
        for r, size in enumerate(sizes):
            for c, mix in enumerate(mixes):
                ax, rows = axes[r, c], heads[(heads["size"] == size) & (heads["mix"] == mix)]
                tau_guides(ax, tau)
                scatter_heads(ax, rows.assign(family=size), lambda _family: "o", 10, TOY_PAIR)
                ax.set_xlim(-limits[0], limits[0])
                ax.set_ylim(-limits[1], limits[1])
                missing = [t.short for t in TOY_PAIR.tasks if not bool(rows[f"learned_{t.name}"].iloc[0])]
                note = "".join(f"\n({short} not learned)" for short in missing)
                if bool(rows["falls_short"].iloc[0]):
                    note += "\nFALLS SHORT (left out)"
                ax.set_title(f"{size}, λ = {mix:g}{note}", fontsize="small")
        fig.supxlabel(delta_label(TOY_PAIR, x, hint=False))
        fig.supylabel(delta_label(TOY_PAIR, y, hint=False))
        fig.legend(handles=category_handles(TOY_PAIR) + robust_handles(), loc="outside right center")
        fig.suptitle(f"Toy models (seed {int(heads['seed'].iloc[0])}): every head, τ = {tau:g}; axes clipped at ±2")
    return fig


def training_curves(losses: pd.DataFrame, style: FigureStyle) -> Figure:
    """Cross-entropy of each kind of trained token against step (rolling mean, then mean over seeds): a
    row per size, a panel per kind, a line per mix."""
    sizes = list(dict.fromkeys(losses["size"]))
    mixes = sorted(losses["mix"].unique())
    cmap = {mix: colour for mix, colour in zip(mixes, _mix_colours(len(mixes)), strict=True)}
    with styled(style):
        fig = new_figure(style.width_in, len(sizes) * style.panel_height_in + 1.2)
        axes = fig.subplots(len(sizes), len(KINDS), sharex=True, sharey=True, squeeze=False)
        for r, size in enumerate(sizes):
            for c, (kind, label) in enumerate(KINDS.items()):
                ax = axes[r, c]
                for mix in mixes:
                    rows = losses[(losses["size"] == size) & (losses["mix"] == mix)]
                    curve = rows.groupby("step")[f"loss_{kind}"].mean().rolling(25, min_periods=1).mean()
                    if curve.notna().any():
                        ax.plot(curve.index, curve.to_numpy(), color=cmap[mix], linewidth=1)
                ax.set_title(f"{size}: {label}", fontsize="small")
                if c == 0:
                    ax.set_ylabel("cross-entropy (nats)")
        fig.supxlabel("training step")
        handles = [Line2D([], [], color=cmap[m], label=f"λ = {m:g}") for m in mixes]
        fig.legend(handles=handles, loc="outside right center", title="mix")
        fig.suptitle("Toy models: training loss of the trained tokens of each kind (no line: kind not trained)")
    return fig


def _mix_colours(n: int) -> list[str]:
    """``n`` colours from blue (λ = 0, anti-repetition only) to orange (λ = 1, IOI only)."""
    start, end = np.array([0x00, 0x72, 0xB2]), np.array([0xD5, 0x5E, 0x00])
    return ["#{:02X}{:02X}{:02X}".format(*np.round(start + (end - start) * t).astype(int))
            for t in np.linspace(0, 1, n)]

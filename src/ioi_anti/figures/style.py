"""The style kit every figure shares: family colours and markers, Δ labels, the figure style,
legends, flags and the log-scale parameter axis.

Figures are built on the object-oriented API with an Agg canvas, so they render headless and are
untouched by ``plt.close("all")`` (which kedro's MatplotlibDataset calls after every save).
Colours are Okabe–Ito (colour-blind safe); family is also encoded by marker shape. On the scale
figures a line joins the sizes of a family, and a family with one size is a lone marker.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from ioi_anti.analysis.categories import Pair
from ioi_anti.params import Reporting

# Same order as ioi_anti.models.spec.FAMILIES, which is not imported here because that module loads torch.
FAMILY_ORDER = ("gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma", "qwen2")


FAMILY_COLOURS = {"gpt2": "#0072B2", "gpt-neo": "#E69F00", "opt": "#009E73", "pythia": "#CC79A7", "llama": "#D55E00",
                  "gemma": "#56B4E9", "qwen2": "#000000"}


FAMILY_MARKERS = {"gpt2": "o", "gpt-neo": "s", "opt": "^", "pythia": "D", "llama": "v", "gemma": "X", "qwen2": "p"}


UNKNOWN_COLOUR, UNKNOWN_MARKER = "#999999", "P"


INSTRUCT = "instruct"  # ModelSpec.tuning of an instruction-tuned model ("base": pretrained only)


TUNING_WORDS = {"base": "base", INSTRUCT: "instruction-tuned"}


FLAG_COLOUR = "#B00000"


GAP_WARNING = "gap ≤ 0: Δ not meaningful"


DODGE_STEP = 1.04  # multiplicative x offset between families on log axes (a few % of a model's size)




def math_delta(pair: Pair, task: str) -> str:
    """``Δ_<short>`` of one of the pair's tasks in mathtext (spaces kept: "toy IOI")."""
    return rf"$\Delta_{{\mathrm{{{pair.delta_name(task)[2:].replace(' ', chr(92) + ' ')}}}}}$"


def delta_unit(heads: pd.DataFrame) -> str:
    """The unit of a per-head table's Δ (``head_ablation.delta``): normalised, or raw in a published-protocol
    run (tables without the column predate raw Δ and are normalised)."""
    return str(heads["delta_unit"].iloc[0]) if "delta_unit" in heads.columns else "normalised"


def unit_words(pair: Pair, task: str, unit: str) -> str:
    """What one of the pair's Δ is measured in: a fraction of the task's gap, or logits."""
    label = pair.tasks[pair.names.index(task)].label
    return f"fraction of {label} gap" if unit == "normalised" else f"{label} logit difference, raw"


def delta_label(pair: Pair, task: str, hint: bool = True, unit: str = "normalised") -> str:
    """Axis label of one of the pair's Δ, e.g. ``Δ_IOI (fraction of IOI gap; < 0: head supports it)``."""
    return rf"{math_delta(pair, task)} ({unit_words(pair, task, unit)}" + ("; < 0: head supports it)" if hint else ")")


@dataclass(frozen=True)
class FigureStyle:
    """Paper-size layout: figure width, base font size (>= 8 pt) and height of one panel row."""

    width_in: float = 7.0
    font_size: float = 8.0
    panel_height_in: float = 2.2

    def __post_init__(self) -> None:
        if self.font_size < 8:
            raise ValueError(f"font_size must be >= 8 pt to stay readable at paper size; got {self.font_size}.")
        if self.width_in <= 0 or self.panel_height_in <= 0:
            raise ValueError("figure width and panel height must be positive.")

    @classmethod
    def from_params(cls, reporting: Reporting) -> FigureStyle:
        """The style of the ``reporting`` settings."""
        return cls(reporting.fig_width_in, reporting.font_size, reporting.panel_height_in)


def format_params(n_params: float) -> str:
    """Parameter count as a short label: 124M, 1.0B."""
    if n_params >= 1e9:
        return f"{n_params / 1e9:.1f}B"
    if n_params >= 1e6:
        return f"{n_params / 1e6:.0f}M"
    return f"{n_params / 1e3:.0f}K"


def ablation_label(table: pd.DataFrame) -> str:
    """The ablation type(s) recorded in a table, e.g. "mean"."""
    return "/".join(sorted(map(str, table["ablation"].unique())))


def family_colour(family: str) -> str:
    """Okabe–Ito colour of a model family (grey for an unknown family)."""
    return FAMILY_COLOURS.get(family, UNKNOWN_COLOUR)


def family_marker(family: str) -> str:
    """Marker of a model family."""
    return FAMILY_MARKERS.get(family, UNKNOWN_MARKER)


def ordered_families(families: pd.Series) -> list[str]:
    """Families present, in the canonical order, unknown ones last."""
    present = set(families)
    return [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))


def flagged_models(table: pd.DataFrame) -> list[str]:
    """Models whose task gap is not clearly positive (``gap_ok`` False)."""
    return sorted(table.loc[~table["gap_ok"].astype(bool), "model"].unique())


@contextmanager
def styled(style: FigureStyle) -> Iterator[None]:
    """Font sizes and spines of ``style`` for every artist created inside the block."""
    rc = {
        "font.size": style.font_size, "axes.titlesize": style.font_size + 1, "axes.labelsize": style.font_size,
        "xtick.labelsize": style.font_size, "ytick.labelsize": style.font_size, "legend.fontsize": style.font_size,
        "legend.title_fontsize": style.font_size, "figure.titlesize": style.font_size + 2,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    }
    with matplotlib.rc_context(rc):
        yield


def new_figure(width_in: float, height_in: float) -> Figure:
    """A constrained-layout Figure on an Agg canvas."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_title(fig: Figure, title: str, flagged: list[str], flag_verb: str = "flagged") -> None:
    """Figure title, plus a warning line naming models whose Δ are not meaningful."""
    if flagged:
        title += f"\n{flag_verb} ({GAP_WARNING}): {', '.join(flagged)}"
    fig.suptitle(title, color=FLAG_COLOUR if flagged else "black")


def log_params_axis(ax: Axes, n_params: pd.Series) -> None:
    """Log x axis for parameter counts, padded so a single model still has a readable range."""
    ax.set_xscale("log")
    ax.set_xlim(n_params.min() / 1.6, n_params.max() * 1.6)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: format_params(value)))
    ax.set_xlabel("Parameters (log scale)")


def flag_points(ax: Axes, x: pd.Series, y: pd.Series) -> None:
    """Overlay a cross on points of models whose gap is not positive."""
    ax.scatter(x, y, marker="x", s=60, color=FLAG_COLOUR, linewidths=1.5, zorder=5)


def dodged_x(rows: pd.DataFrame, families: list[str]) -> pd.Series:
    """Parameter counts shifted by a few % per family, so families of equal size do not overlap."""
    index = rows["family"].map({family: i for i, family in enumerate(families)}).astype(float)
    return rows["n_params"] * DODGE_STEP ** (index - (len(families) - 1) / 2)


def flag_handle() -> Line2D:
    """Legend entry for a model flagged because its gap is not clearly positive."""
    return Line2D([], [], marker="x", color=FLAG_COLOUR, linestyle="none", markersize=7, label=GAP_WARNING)


def family_line(n_sizes: int, line: str = "-") -> str:
    """Line style of a family on a scale figure: ``line`` through two or more sizes, none for one size."""
    return line if n_sizes >= 2 else "none"


def family_sizes(rows: pd.DataFrame) -> dict[str, int]:
    """Number of models (sizes) of each family in ``rows``."""
    return rows.groupby("family")["model"].nunique().to_dict()


def has_instruct(table: pd.DataFrame) -> bool:
    """Whether any model of ``table`` is instruction-tuned."""
    return bool((table["tuning"] == INSTRUCT).any())


def _tuning_note(rows: pd.DataFrame) -> str:
    """A family's tuning for its legend label: one word, or each size's when its models differ."""
    models = rows.groupby("model")[["n_params", "tuning"]].first().sort_values("n_params")
    if models["tuning"].nunique() == 1:
        return str(models["tuning"].iloc[0])
    return ", ".join(f"{format_params(n)} {t}" for n, t in models.itertuples(index=False))


def family_handles(rows: pd.DataFrame, families: list[str], with_tuning: bool = False) -> list[Line2D]:
    """Legend entries: a line for a family of several sizes, a lone marker for one size; with
    ``with_tuning`` each label also says whether the family's models are base or instruction-tuned."""
    sizes = family_sizes(rows)
    handles = []
    for f in families:
        label = f"{f} · {sizes[f]} size{'s' if sizes[f] > 1 else ''}"
        if with_tuning:
            label += f" · {_tuning_note(rows[rows['family'] == f])}"
        handles.append(Line2D([], [], color=family_colour(f), marker=family_marker(f), linestyle=family_line(sizes[f]),
                              label=label))
    return handles


def tuning_handles() -> list[Line2D]:
    """Legend entries for base (solid) and instruction-tuned (dashed) lines."""
    return [Line2D([], [], marker="o", linestyle="none", color="#777777", markerfacecolor=face, label=label)
            for face, label in (("#777777", "filled: base"), ("white", "hollow: instruction-tuned"))]


def bottom_legend(fig: Figure, handles: list[Line2D], style: FigureStyle) -> None:
    """The family legend under the panels: as many entries a row as fit the figure, read row by row."""
    entry_in = max(len(h.get_label()) for h in handles) * 0.5 * style.font_size / 72 + 0.55
    ncols = max(1, min(len(handles), int(style.width_in // entry_in)))
    by_column = [h for j in range(ncols) for h in handles[j::ncols]]  # matplotlib fills a legend column by column
    fig.legend(handles=by_column, loc="outside lower center", ncols=ncols,
               title="Model family: a line joins the sizes of a family; a lone marker is a family of one size")


def model_order(table: pd.DataFrame) -> list[str]:
    """Models by family (canonical order) and then size."""
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    models = table.groupby("model")[["family", "n_params"]].first()
    models["rank"] = models["family"].map(rank).fillna(len(rank))
    return list(models.sort_values(["rank", "n_params"]).index)

"""The report's figures: which figure datasets it shows, under which keys and folders, with which
captions (the catalog's figure entries and the report's sections both read this registry).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NOT_RECORDED = "not recorded"


LAYER_HISTS_DIR = "layer_hists"


TRAINING_DIR = "training"


DECOMPOSITION_DIR = "hero_decomposition"


KNOWN_METADATA = ("models", "seed", "ablation", "delta", "versions", "device",
                  "model_config")  # model_config: shown in the Models line, from the per-head table


@dataclass(frozen=True)
class FigureEntry:
    """A figure dataset: its catalog name, file name under the reporting folder, and what it shows."""

    dataset: str
    file_name: str
    caption: str


FIGURES = (
    FigureEntry(
        "corr_vs_scale_cross_family_plot", "corr_vs_scale_cross_family.png",
        "Pearson (left) and Spearman (right) correlation of {dx} with {dy} over all heads of each model "
        "against parameter count, with bootstrap intervals over heads: a line joins the sizes of a family, a "
        "family of one size is a lone marker, and hollow markers are instruction-tuned models (families are "
        "offset by a few % on the log x axis so equal sizes do not overlap); the numbers are in "
        "`corr_vs_scale_cross_family.csv`.",
    ),
    FigureEntry(
        "strong_head_scaling_plot", "strong_head_scaling.png",
        "Number (top) and share (bottom) of {x_only}, {y_only} and shared heads at the default τ against "
        "parameter count, marker per family, a line through the sizes of a family (a lone marker for one size); "
        "hollow markers on dotted lines count the robust subset whose 95% interval clears τ, and the legend "
        "says which families are base or instruction-tuned when the run has instruction-tuned models.",
    ),
    FigureEntry(
        "all_heads_phase_space_plot", "all_heads_phase_space.png",
        "{dx} against {dy} for every head of every model with a positive gap, coloured by category at "
        "the default τ, marker per family, with the ±τ lines and the shaded weak box; hollow markers are "
        "borderline heads whose interval crosses τ.",
    ),
    FigureEntry(
        "family_grid_plot", "family_grid.png",
        "The same phase space with one panel per model, a row per family, on shared axes; instruction-tuned "
        "models say `instruct` in their panel title.",
    ),
)


def layer_hist_key(model: str) -> str:
    """Partition name (file stem) of a model's layer histogram, safe as a file name."""
    return "layer_hist_" + re.sub(r"[^A-Za-z0-9._-]+", "_", model)


def decomposition_key(model: str) -> str:
    """Partition name (file stem) of a model's hero-decomposition figure, safe as a file name."""
    return "hero_decomposition_" + re.sub(r"[^A-Za-z0-9._-]+", "_", model)


TASK_ROLES_FIGURE = FigureEntry(
    "task_roles_plot", "task_roles.png",
    "Per model: strong heads per role signature at the default τ (UpSet-style: each bar a set of tasks, the "
    "dots below name them; solid: heads robust on every task of the set), and the Pearson correlation of Δ "
    "between every pair of tasks over all heads, with bootstrap intervals.")


HERO_FIGURES = (
    FigureEntry("hero_dose_response_plot", "hero_dose_response.png",
                "Δ of both tasks as each hero head's z is moved step by step from clean (α = 0) to its ablation "
                "value (α = 1), with bootstrap bands over prompts."),
    FigureEntry("hero_topk_plot", "hero_topk.png",
                "Δ of both tasks when the top-k heads of each category are ablated together, k = 1..K: how much "
                "of each behaviour the category carries."),
    FigureEntry("hero_paths_plot", "hero_paths.png",
                "Path patching: each hero head's total effect, its direct effect on the logits, all paths at "
                "once (a check: equals the total), and its effect routed through the query, key or value input "
                "of the most involved downstream heads."),
    FigureEntry("hero_attention_plot", "hero_attention.png",
                "Mean attention from END of each hero head to the positions each task names (IOI: the IO, S1 and "
                "S2 names; anti-repetition: the in-context list items; induction: the token after the earlier "
                "occurrence)."),
)


@dataclass(frozen=True)
class SavedFigure:
    """A figure as saved: where its PNG lies (the loaded version) and the PNG itself."""

    path: str
    png: bytes

"""The toy-models report: do heads become shared when both objectives are trained, and does that depend
on the model's size? Tables in, Markdown out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ioi_anti.params import ToyModels
from ioi_anti.report.markdown import markdown_table, with_interval

FIGURES = (
    ("toy_roles_plot", "toy_roles.png", "held-out accuracy, strong heads per learned task, the shared share of "
     "strong heads and the Pearson r of Δ_toy_IOI with Δ_toy_anti against the mix λ, per size (95 % "
     "intervals over seeds; a cross: a model that falls short, left out)"),
    ("toy_phase_space_plot", "toy_phase_space.png", "every head of the first seed's models, a row per size "
     "and a panel per λ, coloured by category at τ"),
    ("toy_training_plot", "toy_training.png", "the training loss of each kind of trained token against step"),
)


def _cell(row: pd.Series, name: str, fmt: str = "{:.2f}") -> str:
    if row[f"n_{name}"] == 0:
        return "–"
    return with_interval(row[name], row[f"{name}_low"], row[f"{name}_high"], fmt)


def _accuracy_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Mean held-out accuracy over seeds per size and mix, for each kind of prompt, with the training steps."""
    labels = {"ioi": "IOI (IO next)", "list": "list (new item next)", "copy": "copy (listed item next)"}
    table = accuracy.assign(kind=accuracy["kind"].map(labels))
    wide = table.pivot_table(index=["size", "mix"], columns="kind", values="accuracy", aggfunc="mean")
    wide = wide[list(labels.values())].map("{:.0%}".format)
    per_model = accuracy.drop_duplicates("model")
    steps = per_model.groupby(["size", "mix"])["steps"].agg(lambda s: f"{s.min()}–{s.max()}" if s.min() != s.max()
                                                            else f"{s.min()}")
    converged = per_model.groupby(["size", "mix"])["converged"].agg(lambda c: f"{int(c.sum())}/{len(c)}")
    wide = wide.assign(**{"steps trained": steps, "converged": converged}).reset_index()
    return wide.assign(mix=wide["mix"].map("{:g}".format)).rename(columns={"mix": "λ"})


def _over_mix(rows: pd.DataFrame, name: str, fmt: str) -> str:
    return ", ".join(f"{with_interval(r[name], r[f'{name}_low'], r[f'{name}_high'], fmt)} at λ = {r['mix']:g} "
                     f"({r[f'n_{name}']} seeds)" for _, r in rows.iterrows() if r[f"n_{name}"] > 0)


def _answer(summary: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """The question answered in words: per size the shared fraction and r against λ, then the test."""
    both = summary[summary["n_shared_fraction"] > 0]
    if both.empty:
        return ["No kept model learned both tasks, so this grid cannot say whether training both makes heads "
                "shared."]
    lines = []
    for size, rows in both.groupby("size", sort=False):
        lines.append(f"- **{size}**: shared heads are {_over_mix(rows, 'shared_fraction', '{:.0%}')} of the strong "
                     f"heads; the Pearson r of Δ_toy_IOI with Δ_toy_anti is {_over_mix(rows, 'pearson', '{:.2f}')} "
                     "(means over the seeds kept, 95 % intervals over seeds).")
    for row in test.itertuples():
        if np.isnan(row.p_value):
            lines.append(f"- **{row.size}**: too few models with both tasks learned on each side (both objectives "
                         f"trained: {row.n_both}, mostly one: {row.n_mostly_one}; two each needed) to test whether "
                         "shared heads need both objectives.")
            continue
        verdict = ("more" if row.difference > 0 else "fewer") if row.p_value < 0.05 else "no clear difference in"
        difference = with_interval(row.difference, row.difference_low, row.difference_high, "{:+.2f}")
        lines.append(
            f"- **{row.size}**, do shared heads need both objectives? Trained on both (λ ∈ {{{row.mixes_both}}}, "
            f"{row.n_both} models) the shared fraction is {row.shared_both:.0%}; trained mostly on one (λ ∈ "
            f"{{{row.mixes_mostly_one}}}, {row.n_mostly_one} models, both tasks learned all the same) "
            f"{row.shared_mostly_one:.0%}: a difference of {difference} (bootstrap 95 % interval), "
            f"permutation p = {row.p_value:.3f}: "
            f"{verdict} shared heads when both objectives are trained.")
    return lines


def toy_report(summary: pd.DataFrame, per_model: pd.DataFrame, accuracy: pd.DataFrame, gaps: pd.DataFrame,
               test: pd.DataFrame, settings: ToyModels, images: Mapping[str, str] | None = None) -> str:
    """The Markdown report of the toy-models pipeline (figures shown where ``images`` gives their sources)."""
    grid, training = settings.grid, settings.training
    sizes = ", ".join(f"{s.name} ({s.n_layer} layers × {s.n_head} heads, d = {s.n_embd})" for s in grid.sizes)
    short = per_model[per_model["falls_short"]]
    missed = gaps[gaps["falls_short"]].groupby("model")["task"].agg(", ".join)
    short_text = (f"{len(short)} of {len(per_model)} models ({len(short) / len(per_model):.0%}) fall short and are "
                  f"left out of the role statistics: " + "; ".join(f"{m} ({missed[m]})" for m in short["model"]) + "."
                  if len(short) else f"every one of the {len(per_model)} models learned what it was required to.")
    roles = pd.DataFrame({
        "size": summary["size"], "λ": summary["mix"].map("{:g}".format),
        "seeds kept": summary["n_seeds"] - summary["n_falls_short"], "left out": summary["n_falls_short"],
        "strong (toy IOI)": [_cell(r, "n_strong_toy_ioi", "{:.1f}") for _, r in summary.iterrows()],
        "strong (toy anti)": [_cell(r, "n_strong_toy_anti", "{:.1f}") for _, r in summary.iterrows()],
        "shared": [_cell(r, "n_shared", "{:.1f}") for _, r in summary.iterrows()],
        "shared / strong": [_cell(r, "shared_fraction") for _, r in summary.iterrows()],
        "Pearson r": [_cell(r, "pearson") for _, r in summary.iterrows()],
        "seeds with both learned": summary["n_pearson"],
    })
    lines = [
        "# Toy models: IOI-like vs anti-repetition-like training objectives",
        "",
        "Do heads become shared between IOI and anti-repetition because both are trained? Small GPT-2 models "
        "are trained from scratch on a synthetic word-level language in which a share λ of the training "
        "sequences is IOI-like (two names, one repeated, the next token is the other) and the rest "
        "anti-repetition-like (half lists whose next item must be new, half copies where repeating is right). "
        "Each model is then measured like the pretrained ones: every head's Δ on held-out toy IOI and toy "
        "anti-repetition prompts (mean ablation, normalised by the task's gap against its reference), and "
        f"its categories at τ = {settings.tau:g}.",
        "",
        f"- Sizes: {sizes}; λ: {', '.join(f'{m:g}' for m in grid.mixes)}; seeds: "
        f"{', '.join(str(s) for s in grid.seeds)} ({len(per_model)} models).",
        f"- Training: the models of a size together, each with its own initialisation and batches; up to "
        f"{training.steps} steps of {training.batch_size} sequences, AdamW (lr {training.lr:g}), loss on the "
        f"trained tokens only. Every {training.eval_every} steps each model's accuracy on held-out validation "
        f"prompts (another draw than the measured ones) is taken; a model converges once every kind it must learn "
        f"(of an objective with a share of at least {settings.required_share:.0%}) is at least "
        f"{training.stop_accuracy:.1%} accurate at {training.patience} evaluations in a row, and stops when a "
        f"minority objective has too or {training.minority_steps} steps later (a minority objective's time), or "
        f"after {training.stall_evaluations} evaluations without a new best (stalled).",
        f"- Held out of training: {settings.language.heldout_share:.0%} of the combinations (template and name "
        "pair, or category and items, also as the start of a longer list); every prompt below is one of them.",
        f"- Learned: held-out top-1 accuracy of at least {settings.learned_accuracy:.0%} on every kind of prompt of "
        f"the task. A model must learn each objective trained with a share of at least "
        f"{settings.required_share:.0%}; {short_text}",
        "",
        "## The answer",
        "",
        *_answer(summary, test),
        "",
        "## Held-out accuracy (top-1 over the vocabulary, mean over seeds)",
        "",
        markdown_table(_accuracy_table(accuracy)),
        "",
        "Chance (uniform over the vocabulary): " + ", ".join(
            f"{kind} {chance:.1%}" for kind, chance in accuracy.groupby("kind")["chance"].mean().items()) + ".",
        "",
        "## Roles against the objective mix (mean over the seeds kept, 95 % interval over seeds)",
        "",
        "Counts and the shared share: percentile bootstrap over seeds; Pearson r: Fisher z with a t interval. "
        "Each number is over the kept seeds where it exists (a count where the task is learned; shared heads, "
        "their share and r where both are).",
        "",
        markdown_table(roles),
        "",
        "Tables: `toy_roles` (this one, with every interval), `toy_sharing_test` (the test above), "
        "`toy_model_roles` (one row per model, `falls_short` flags), `toy_head_categories` (every head's category "
        "at τ), `toy_per_head`, `toy_accuracy`, `toy_learned`, `toy_losses` (loss and validation curves).",
        "",
        "## Figures",
        "",
    ]
    for dataset, file_name, caption in FIGURES:
        if images and dataset in images:
            lines += [f"![{file_name}]({images[dataset]})", ""]
        lines += [f"- `{file_name}` (dataset `{dataset}`): {caption}.", ""]
    return "\n".join(lines).rstrip() + "\n"

"""The toy-models report: do heads become shared when both objectives are trained, and does that depend
on the model's size? Tables in, Markdown out."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ioi_anti.params import ToyModels
from ioi_anti.report.markdown import markdown_table, with_interval

FIGURES = (
    ("toy_roles_plot", "toy_roles.png", "held-out accuracy, strong heads per learned task, the shared share of "
     "strong heads and the Pearson r of Δ_toy_IOI with Δ_toy_anti against the mix λ, per size (95 % "
     "intervals over seeds)"),
    ("toy_phase_space_plot", "toy_phase_space.png", "every head of the first seed's models, a row per size "
     "and a panel per λ, coloured by category at τ"),
    ("toy_training_plot", "toy_training.png", "the training loss of each kind of trained token against step"),
)


def _cell(row: pd.Series, name: str, fmt: str = "{:.2f}") -> str:
    if row[f"n_{name}"] == 0:
        return "–"
    return with_interval(row[name], row[f"{name}_low"], row[f"{name}_high"], fmt)


def _accuracy_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Mean held-out accuracy over seeds per size and mix, for each task and role, with chance."""
    labels = {("toy_ioi", "clean"): "IOI (IO next)", ("toy_anti", "clean"): "list (new item next)",
              ("toy_anti", "ref"): "copy (listed item next)"}
    table = accuracy.assign(kind=[labels[(t, r)] for t, r in zip(accuracy["task"], accuracy["role"], strict=True)])
    wide = table.pivot_table(index=["size", "mix"], columns="kind", values="accuracy", aggfunc="mean")
    wide = wide[list(labels.values())].map("{:.0%}".format).reset_index()
    return wide.assign(mix=wide["mix"].map("{:g}".format)).rename(columns={"mix": "λ"})


def _answer(summary: pd.DataFrame) -> list[str]:
    """The question answered in words, from the mixes where both tasks were learned."""
    both = summary[(summary["n_shared_fraction"] > 0) & (summary["mix"] > 0) & (summary["mix"] < 1)]
    if both.empty:
        return ["No model learned both tasks, so this grid cannot say whether training both makes heads shared."]
    lines = []
    for size, rows in both.groupby("size", sort=False):
        shares = ", ".join(f"{row.shared_fraction:.0%} at λ = {row.mix:g}" for row in rows.itertuples())
        r = ", ".join(f"{row.pearson:.2f} at λ = {row.mix:g}" for row in rows.itertuples())
        lines.append(f"- **{size}**: shared heads are {shares} of the strong heads (mean over seeds); the Pearson r of "
                     f"Δ_toy_IOI with Δ_toy_anti is {r}.")
    means = both.groupby("size", sort=False)["shared_fraction"].mean()
    if len(means) > 1:
        most, least = means.idxmax(), means.idxmin()
        lines.append(f"- Averaged over the mixes that train both, the {most} models share {means[most]:.0%} of their "
                     f"strong heads and the {least} models {means[least]:.0%}; see the intervals in the table before "
                     "reading a difference into this.")
    return lines


def toy_report(summary: pd.DataFrame, per_model: pd.DataFrame, accuracy: pd.DataFrame, gaps: pd.DataFrame,
               settings: ToyModels, images: Mapping[str, str] | None = None) -> str:
    """The Markdown report of the toy-models pipeline (figures shown where ``images`` gives their sources)."""
    grid, training = settings.grid, settings.training
    sizes = ", ".join(f"{s.name} ({s.n_layer} layers × {s.n_head} heads, d = {s.n_embd})" for s in grid.sizes)
    learned = gaps.pivot(index="model", columns="task", values="learned")
    not_learned = [f"{m} ({', '.join(t for t in learned.columns if not learned.at[m, t])})"
                   for m in learned.index if not learned.loc[m].all()]
    roles = pd.DataFrame({
        "size": summary["size"], "λ": summary["mix"].map("{:g}".format), "seeds": summary["n_seeds"],
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
        f"- Training: {training.steps} steps of {training.batch_size} sequences, AdamW (lr "
        f"{training.lr:g}), loss on the trained tokens only.",
        f"- Held out of training: {settings.language.heldout_share:.0%} of the combinations (template and names, "
        "or category and items); every prompt below is one of them.",
        "",
        "## The answer",
        "",
        *_answer(summary),
        "",
        "A task counts only where a model has learned it (its gap's 95 % interval above 0): "
        + (f"not learned: {'; '.join(not_learned)}." if not_learned else "every model learned both tasks."),
        "",
        "## Held-out accuracy (top-1 over the vocabulary, mean over seeds)",
        "",
        markdown_table(_accuracy_table(accuracy)),
        "",
        "Chance (uniform over the vocabulary): " + ", ".join(
            f"{task} {chance:.1%}" for task, chance in accuracy.groupby("task")["chance"].mean().items()) + ".",
        "",
        "## Roles against the objective mix (mean over seeds, 95 % t interval over seeds)",
        "",
        "Each number is over the seeds where it exists (a count where the task is learned; shared heads, "
        "their share and r where both are); with two or three seeds a t interval is wide, by design.",
        "",
        markdown_table(roles),
        "",
        "Tables: `toy_roles` (this one, with every interval), `toy_model_roles` (one row per model), "
        "`toy_head_categories` (every head's category at τ), `toy_per_head`, `toy_accuracy`, `toy_learned`, "
        "`toy_losses`.",
        "",
        "## Figures",
        "",
    ]
    for dataset, file_name, caption in FIGURES:
        if images and dataset in images:
            lines += [f"![{file_name}]({images[dataset]})", ""]
        lines += [f"- `{file_name}` (dataset `{dataset}`): {caption}.", ""]
    return "\n".join(lines).rstrip() + "\n"

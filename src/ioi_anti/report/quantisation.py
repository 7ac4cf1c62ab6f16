"""The quantisation report: does quantising the weights change the study's categories, its Δ_x/Δ_y
correlation or its shared (hero) heads? Exactly on toy models, by sensitivity on the run's models.
Tables in, Markdown out."""

from __future__ import annotations

import pandas as pd

from ioi_anti.analysis.categories import Pair
from ioi_anti.params import Quantisation
from ioi_anti.report.markdown import label_models, markdown_table
from ioi_anti.report.sections import quantisations

# A change of r(Δ_x, Δ_y) below this is read as none: it is below the width of the bootstrap intervals the
# report gives r with (about ±0.05 or wider for every model measured here).
R_TOLERANCE = 0.05


def how_measured(reference: pd.DataFrame) -> str:
    """How the re-quantised copies were swept: as the run's own sweep, exactly or by screening."""
    if set(reference["mode"]) == {"exact"}:
        return "every head is measured again exactly"
    return ("its heads are measured again as the run measured them, by screening: exactly where the re-quantised "
            "model's own attribution estimate could reach τ, by that estimate elsewhere (a head so estimated is weak "
            "in both tables by the same rule)")


def _median_min(values: pd.Series) -> str:
    return f"{values.median():.3f} ({values.min():.3f})"


def toy_table(effects: pd.DataFrame, pair: Pair) -> pd.DataFrame:
    """Per GGUF type, over the toy models: r of each task's Δ with float32's (median, lowest), the largest
    |ΔΔ|, the heads whose category changes (all, and with a float32 interval clear of τ), the largest change
    of r(Δ_x, Δ_y) and the largest fall of held-out accuracy."""
    rows = []
    for kind, frame in effects.groupby("quantised_to", sort=False):
        n_heads = int(frame["n_heads"].sum())
        row = {"type": kind, "models": len(frame)}
        for task in pair.names:
            short = pair.delta_name(task)
            row[f"r({short}) median (min)"] = _median_min(frame[f"pearson_{task}"])
            row[f"max |change of {short}|"] = f"{frame[f'max_abs_change_{task}'].max():.3f}"
        row["heads changing category"] = f"{int(frame['n_changed'].sum())} of {n_heads}"
        row["of which clear of τ"] = int(frame["n_changed_settled"].sum())
        r_change = frame["r_change"].abs().max()
        row["max |change of r|"] = "–" if pd.isna(r_change) else f"{r_change:.3f}"
        row["worst accuracy change"] = f"{frame['accuracy_change'].min():+.1%}"
        rows.append(row)
    return pd.DataFrame(rows)


def tensor_table(tensors: pd.DataFrame) -> pd.DataFrame:
    """Per model: how large the re-quantisation's change is per weight tensor (‖ΔW‖/‖W‖, median and range over
    tensors) against the change the same type makes to each tensor's values shuffled (a fresh quantisation)."""
    rows = []
    for model, frame in tensors.groupby("model", sort=False):
        ratio = frame["rel_change"] / frame["fresh_rel_change"]
        rows.append({"model": model, "tensors": len(frame), "shipped as": frame["quantisation"].iloc[0],
                     "re-quantised to": frame["quantised_to"].iloc[0],
                     "‖ΔW‖/‖W‖ median (range)": f"{frame['rel_change'].median():.3f} "
                                                 f"({frame['rel_change'].min():.3f}–{frame['rel_change'].max():.3f})",
                     "fresh quantisation, median": f"{frame['fresh_rel_change'].median():.3f}",
                     "ratio median (range)": f"{ratio.median():.2f} ({ratio.min():.2f}–{ratio.max():.2f})"})
    return pd.DataFrame(rows)


def sensitivity_table(effects: pd.DataFrame, pair: Pair) -> pd.DataFrame:
    """Per model: r and largest |ΔΔ| of each task, the heads whose category changes, r(Δ_x, Δ_y) before and
    after, and which heads change."""
    rows = []
    for row in effects.itertuples(index=False):
        out = {"model": row.model, "heads": row.n_heads}
        for task in pair.names:
            out[f"r({pair.delta_name(task)})"] = f"{getattr(row, f'pearson_{task}'):.3f}"
            out[f"max |change of {pair.delta_name(task)}|"] = f"{getattr(row, f'max_abs_change_{task}'):.3f}"
        out["heads changing category (clear of τ)"] = f"{row.n_changed} ({row.n_changed_settled})"
        out["r(Δ_x, Δ_y) before → after"] = f"{row.r_ref:.3f} → {row.r_quantised:.3f}"
        out["heads that change"] = row.changed_heads or "–"
        rows.append(out)
    return pd.DataFrame(rows).rename(columns={"r(Δ_x, Δ_y) before → after": f"r({pair.delta_name(pair.names[0])}, "
                                              f"{pair.delta_name(pair.names[1])}) before → after"})


def verdict(effects: pd.DataFrame, heads: pd.DataFrame, pair: Pair) -> list[str]:
    """One line per model and claim: categories, the correlation and the shared heads, robust or not."""
    shared = pair.categories[2]
    lines = []
    for row in effects.itertuples(index=False):
        model_heads = heads[heads["model"] == row.model]
        moved_shared = model_heads[model_heads["changed"] & ((model_heads["category_ref"] == shared)
                                                            | (model_heads["category"] == shared))]
        categories = ("robust: no head whose interval is clear of τ changes category"
                      + (f" ({row.n_changed} borderline {'head does' if row.n_changed == 1 else 'heads do'})"
                         if row.n_changed else "")
                      if row.n_changed_settled == 0 else
                      f"**not robust**: {row.n_changed_settled} "
                      + ("head whose interval is clear of τ changes" if row.n_changed_settled == 1 else
                         "heads whose interval is clear of τ change") + " category")
        correlation = (f"robust (r changes by {row.r_change:+.3f})" if abs(row.r_change) <= R_TOLERANCE else
                       f"**not robust** (r changes by {row.r_change:+.3f}, more than {R_TOLERANCE})")
        hero = ("robust: every shared head stays shared and none joins" if moved_shared.empty else
                "**not robust**: " + ", ".join(f"L{h.layer}H{h.head} ({h.category_ref} → {h.category})"
                                               for h in moved_shared.itertuples()))
        lines += [f"- **{row.model}**: categories {categories}; the correlation {correlation}; shared heads {hero}."]
    return lines


def toy_verdict(effects: pd.DataFrame) -> list[str]:
    """One line per GGUF type: how many toy heads clear of τ change category, and the largest change of r."""
    lines = []
    for kind, frame in effects.groupby("quantised_to", sort=False):
        settled, n_heads, r = int(frame["n_changed_settled"].sum()), int(frame["n_heads"].sum()), frame["r_change"]
        largest = r.abs().max()
        correlation = ("r is not defined (no model learned both tasks)" if pd.isna(largest) else
                       f"r changes by at most {largest:.3f} "
                       f"({'within' if largest <= R_TOLERANCE else 'beyond'} ±{R_TOLERANCE})")
        lines.append(f"- Toy models in {kind}: {settled} of {n_heads} heads clear of τ change category "
                     f"({int(frame['n_changed'].sum())} in all); {correlation}.")
    return lines


def quantisation_report(toy_effects: pd.DataFrame, toy_tensors: pd.DataFrame, effects: pd.DataFrame,
                        tensors: pd.DataFrame, heads: pd.DataFrame, reference: pd.DataFrame, pair: Pair,
                        toy_pair: Pair, tau: float, toy_tau: float, settings: Quantisation) -> str:
    """The report (see the module's docstring): ``pair`` is the run's, ``toy_pair`` the toy tasks'."""
    shipped = quantisations(reference)
    toy_changes = toy_tensors.groupby("quantised_to", sort=False)["rel_change"].median()
    lines = [
        "# Quantised weights and the study's heads",
        "",
        "Every model this project measures offline ships as a 4-bit GGUF file, de-quantised to float when loaded: "
        + ", ".join(shipped) + ". "
        "The paper's models are measured in their 16- or 32-bit weights. This report measures what quantisation "
        "does to every head's Δ, to its category, to the correlation of Δ over heads and to the shared heads: "
        "exactly on toy models trained here in float32, and by sensitivity on this run's models.",
        "",
        "## Method",
        "",
        "- Quantisation as `llama-quantize --pure` does it, with the `gguf` package's own quantisers: every weight "
        "matrix (attention, MLP and the token embedding, which a tied model shares with its unembedding) in blocks "
        "of 32 along its input dimension; norms, biases and position embeddings stay float32, as llama.cpp leaves "
        "them.",
        f"- Ground truth: every toy model that learned what it was trained on, quantised to "
        f"{', '.join(settings.toy_types)} and measured again with the same sweep, prompts and bootstrap "
        f"(τ = {toy_tau:g}).",
        f"- Sensitivity: the original float weights of the shipped models are not published with them, so each is "
        f"re-quantised to {settings.requantise_to}, a 4-bit scheme independent of the one it shipped in, and "
        f"{how_measured(reference)}, at τ = {tau:g}. A category that moves under a second 4-bit perturbation of the "
        "same size may also have moved under the first.",
        "- A head *changes* when its category differs; *clear of τ* when the reference interval of neither task "
        "contains ±τ (so the measurement itself settled its side of τ).",
        "",
        "## Ground truth: toy models, float32 against each type",
        "",
        "Median ‖ΔW‖/‖W‖ per weight tensor: " + ", ".join(f"{k} {v:.4f}" for k, v in toy_changes.items()) + ".",
        "",
        markdown_table(toy_table(toy_effects, toy_pair)),
        "",
        f"## Sensitivity: this run's models re-quantised to {settings.requantise_to}",
        "",
        "The size of the perturbation per weight tensor, against a fresh quantisation to the same type of the "
        "same values (shuffled, so their blocks line up with no grid they may already lie on): a ratio near 1 "
        "means the perturbation is as large as quantising float weights would be.",
        "",
        markdown_table(tensor_table(tensors)),
        "",
        markdown_table(sensitivity_table(effects, pair)),
        "",
        "## Verdict",
        "",
        *toy_verdict(toy_effects),
        *verdict(effects, heads, pair),
        "",
        "Heads whose category changes are `quant_sensitive` in `quant_heads`, and in `per_head` and the report's "
        "phase spaces (ringed in black) once `kedro run` runs again (its sweeps are saved: it re-tabulates and "
        "redraws).",
    ]
    return label_models("\n".join(lines), shipped) + "\n"

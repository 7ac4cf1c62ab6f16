"""The report's sections: the models compared, figures, run settings, baseline, strong-head and
correlation tables, task roles, attribution, training, screening, hero heads and warnings.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ioi_anti.analysis.categories import PAPER_PAIR, WEAK, Pair, default_tau_rows, table_tasks
from ioi_anti.figures.style import (
    GAP_WARNING,
    INSTRUCT,
    TUNING_WORDS,
    ablation_label,
    delta_unit,
    flagged_models,
    format_params,
    model_order,
)
from ioi_anti.figures.training import series, with_steps
from ioi_anti.hero.routes import REMAINDER, route_names, shared_hero_answers
from ioi_anti.measure.metrics import delta_unit_words
from ioi_anti.models.precision import precision_words
from ioi_anti.models.spec import weights_word
from ioi_anti.report.markdown import (
    INTERACTIVE_MARK,
    label_models,
    markdown_table,
    percent_text,
    with_interval,
)
from ioi_anti.report.registry import (
    DECOMPOSITION_DIR,
    FIGURES,
    HERO_FIGURES,
    KNOWN_METADATA,
    LAYER_HISTS_DIR,
    NOT_RECORDED,
    TASK_ROLES_FIGURE,
    TRAINING_DIR,
    decomposition_key,
    layer_hist_key,
)


def pair_words(pair: Pair) -> dict[str, str]:
    """The words a caption or sentence needs to name the pair: ``dx`` (Δ_IOI), ``x_only`` (IOI-only), ``x``
    (the task's label), and the same for ``y``."""
    x_only, y_only, _shared, _weak = pair.categories
    return {"dx": pair.delta_name(pair.x.name), "dy": pair.delta_name(pair.y.name), "x_only": x_only,
            "y_only": y_only, "x": pair.x.label, "y": pair.y.label}




def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    order = {model: i for i, model in enumerate(model_order(table))}
    return table.assign(_order=table["model"].map(order)).sort_values(["_order"], kind="stable").drop(columns="_order")


def _setting(metadata: Mapping[str, Any], key: str) -> str:
    value = metadata.get(key)
    return NOT_RECORDED if value is None else str(value)


def _setting_text(value: Any) -> str:
    """A metadata value as text: mappings as ``key = value`` pairs rather than a Python dict."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} = {v}" for k, v in value.items())
    return str(value)


def tuning_word(tuning: str) -> str:
    """A model's tuning in words: "base" (pretrained only) or "instruction-tuned"."""
    return TUNING_WORDS.get(tuning, tuning)


def _precision(metadata: Mapping[str, Any]) -> str:
    runtime = metadata.get("runtime") or {}
    if "dtype" not in runtime:
        return NOT_RECORDED
    return precision_words(str(runtime["dtype"]), bool(runtime.get("tf32")), str(metadata.get("device", "cpu")))


def quantisations(heads: pd.DataFrame) -> dict[str, str]:
    """Each model's quantisation (the registry's: ``none`` or a GGUF type); empty for a table saved before it was
    recorded."""
    if "quantisation" not in heads.columns:
        return {}
    return {str(m): str(q) for m, q in heads.groupby("model")["quantisation"].first().items()}


def weights_sentence(heads: pd.DataFrame) -> str:
    """How the run's models' weights are stored, and what 4-bit weights mean for the numbers."""
    weights = quantisations(heads)
    quantised = {m: weights[m] for m in model_order(heads) if weights.get(m, "none") != "none"}
    if not weights:
        return f"Weights: {NOT_RECORDED} (a table saved before quantisation was recorded; re-run `kedro run`)."
    if not quantised:
        return "Weights: every model is measured in its original (unquantised) floating-point weights."
    listed = ", ".join(f"{m} {q}" for m, q in quantised.items())
    return (f"Weights: {listed} are quantised GGUF files de-quantised to float32 when loaded, not the 16- or "
            "32-bit weights most published results use; every table of this report writes their type beside their "
            "name, and a model without one is measured in its original float weights (docs/models.md, "
            "\"Quantisation\").")


def run_section(metadata: Mapping[str, Any], heads: pd.DataFrame) -> str:
    """Models, prompt counts, ablation, τ values, seed, device, package versions and other settings."""
    models = model_order(heads)
    facts = heads.groupby("model")[["family", "tuning", "n_params", "n_layers", "n_heads"]].first()
    weights = quantisations(heads)
    taus = sorted(heads["tau"].unique())
    _rows, tau = default_tau_rows(heads)
    listed = [str(m) for m in metadata.get("models") or []]
    tasks = table_tasks(heads)
    missing = sorted(set(listed) - set(models))
    lines = [
        "## Run",
        "",
        f"- Models ({len(models)}, by family and size):",
        *(f"  - {m}: {facts.at[m, 'family']}, {tuning_word(facts.at[m, 'tuning'])}, "
          f"{format_params(facts.at[m, 'n_params'])} parameters, {facts.at[m, 'n_layers']} layers × "
          f"{facts.at[m, 'n_heads']} heads, weights {weights_word(weights[m]) if m in weights else NOT_RECORDED}"
          for m in models),
        "- Clean prompts per task: " + ", ".join(f"{task} {_setting(metadata, f'n_prompts_{task}')}" for task in tasks),
        f"- Ablation: {metadata.get('ablation') or ablation_label(heads)}",
        f"- Δ: {delta_unit_words(str(metadata.get('delta', 'normalised')))}",
        f"- τ (strong head: |Δ| ≥ τ): {tau:g}; sensitivity τ: {', '.join(f'{t:g}' for t in taus)}",
        f"- Seed: {_setting(metadata, 'seed')}; device: {_setting(metadata, 'device')}",
        f"- Precision: {_precision(metadata)}",
    ]
    if missing:
        lines.append(f"- Listed in run metadata but absent from the per-head results: {', '.join(missing)}")
    extra = {k: v for k, v in metadata.items() if k not in KNOWN_METADATA and not k.startswith("n_prompts_")}
    lines += [f"- {key}: {_setting_text(value)}" for key, value in sorted(extra.items())]
    versions = metadata.get("versions") or {}
    if not versions:
        return "\n".join([*lines, f"- Package versions: {NOT_RECORDED}"])
    table = markdown_table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"]))
    return "\n".join([*lines, "", "Package versions:", "", table])


def warnings_section(baseline: pd.DataFrame, heads: pd.DataFrame) -> str:
    """A warning line per model whose task gap is not clearly positive (empty when there is none)."""
    flagged = sorted(set(flagged_models(heads)) | set(flagged_models(baseline)))
    lines = []
    for model in flagged:
        gaps = baseline[baseline["model"] == model]
        detail = "; ".join(
            f"{row.task} gap {with_interval(row.gap, row.gap_low, row.gap_high)}" for row in gaps.itertuples()
        )
        lines.append(
            f"> **WARNING — {model}: {GAP_WARNING}.** The task gap is not clearly positive"
            f"{f' ({detail})' if detail else ''}, so its normalised Δ are meaningless. It is left out of "
            "`all_heads_phase_space.png` and `strong_head_scaling.png` (unless every model is flagged), crossed "
            "in red in `corr_vs_scale_cross_family.png`, titled in red in `family_grid.png` and its layer "
            "histogram, and its rows below should not be interpreted."
        )
    return "\n>\n".join(lines)


def _model_row(base: pd.DataFrame, heads: pd.DataFrame, corr: pd.Series, pair: Pair) -> dict[str, Any]:
    """One model's row of the comparison table: identity, size, task gaps, r, strong heads and their depth."""
    gaps = {row.task: with_interval(row.gap, row.gap_low, row.gap_high, "{:.2f}") for row in base.itertuples()}
    counts = heads["category"].value_counts()
    strong = heads[heads["category"] != WEAK]
    first = heads.iloc[0]
    return {
        "model": first["model"], "family": first["family"], "tuning": tuning_word(first["tuning"]),
        "params": format_params(first["n_params"]), "layers × heads": f"{first['n_layers']} × {first['n_heads']}",
        **{f"{task.short} gap": gaps.get(task.name, NOT_RECORDED) for task in pair.tasks},
        "Pearson r": with_interval(corr["pearson"], corr["pearson_low"], corr["pearson_high"], "{:.2f}"),
        **{c: int(counts.get(c, 0)) for c in pair.strong_categories},
        "all strong": f"{len(strong)} ({len(strong) / len(heads):.0%})",
        "median depth": f"{strong['depth_frac'].median():.0%}" if len(strong) else "–",
    }


def _tuning_sentence(heads: pd.DataFrame, models: list[str]) -> str:
    """Which models are base and which instruction-tuned, and whether tuning is confounded with family."""
    facts = heads.groupby("model")[["family", "tuning"]].first()
    groups = {t: [m for m in models if facts.at[m, "tuning"] == t] for t in ("base", INSTRUCT)}
    names = {"base": "Base (pretrained only)", INSTRUCT: "Instruction-tuned"}
    text = " ".join(f"{names[t]}: {', '.join(ms)}." for t, ms in groups.items() if ms)
    if all(groups.values()) and facts.groupby("family")["tuning"].nunique().max() == 1:
        text += (" No family has both, so a difference between base and instruction-tuned models here is also one "
                 "between families.")
    return text


def comparison_section(baseline: pd.DataFrame, heads: pd.DataFrame, corr: pd.DataFrame, tau: float,
                       pair: Pair = PAPER_PAIR) -> str:
    """The models of the run side by side: one table, then what it shows in words (at the default τ)."""
    models = model_order(heads)
    corr = corr.set_index("model")
    words = pair_words(pair)
    table = pd.DataFrame([_model_row(baseline[baseline["model"] == m], heads[heads["model"] == m], corr.loc[m], pair)
                          for m in models])
    lines = [
        "## Models compared",
        "",
        f"By family and size, at τ = {tau:g}: the task gaps ("
        f"{'the unit of every Δ' if delta_unit(heads) == 'normalised' else 'measured; Δ is raw, in logits'}) "
        "with 95 % intervals over "
        f"prompts, Pearson r of {words['dx']} with {words['dy']} over all heads with its 95 % interval over heads, "
        "strong heads "
        "per category, all strong heads (share of the model's heads) and their median depth (fraction of the "
        "model's layers).",
        "",
        markdown_table(table),
        "",
        _tuning_sentence(heads, models),
        "",
        weights_sentence(heads),
    ]
    if len(models) > 1:
        share = heads.assign(strong=heads["category"] != WEAK).groupby("model")["strong"].mean()
        most, least = share.idxmax(), share.idxmin()
        r = corr.loc[models, "pearson"].sort_values(ascending=False)
        high, low = r.index[0], r.index[-1]
        overlap = corr.at[low, "pearson_high"] >= corr.at[high, "pearson_low"]
        lines += [
            "",
            f"{most} gives a strong role to the largest share of its heads ({share[most]:.0%}, against "
            f"{share[least]:.0%} for {least}). Pearson r of {words['dx']} with {words['dy']}: "
            + ", ".join(f"{r[m]:.2f} ({m})" for m in r.index) + "; "
            + ("the intervals overlap, so this run does not separate the models on it."
               if overlap else f"the intervals of {high} and {low} do not overlap."),
        ]
    return "\n".join(lines)


def baseline_section(baseline: pd.DataFrame) -> str:
    """Clean and reference task metric, gap and accuracy per model and task, with 95% intervals."""
    table = pd.DataFrame({
        "model": baseline["model"],
        "task": baseline["task"],
        "prompts": baseline["n_prompts"],
        "clean metric": [with_interval(*v) for v in baseline[["clean_metric", "clean_low", "clean_high"]].to_numpy()],
        "reference metric": [with_interval(*v) for v in baseline[["ref_metric", "ref_low", "ref_high"]].to_numpy()],
        "gap": [with_interval(*v) for v in baseline[["gap", "gap_low", "gap_high"]].to_numpy()],
        "accuracy": [with_interval(*v) for v in baseline[["accuracy", "accuracy_low", "accuracy_high"]].to_numpy()],
        "wrong": baseline["n_wrong"] if "n_wrong" in baseline else "",
        "gap ok": baseline["gap_ok"].map({True: "yes", False: "**NO**"}),
        "family": baseline["family"],
        "n_params": baseline["n_params"],
    })
    table = _ordered(table).drop(columns=["family", "n_params"])
    return "\n".join([
        "## Baseline",
        "",
        "Task metric on clean and reference prompts, the gap between them (the unit of every Δ) and "
        "accuracy, with 95% bootstrap intervals over prompts; `wrong` counts the clean prompts whose right "
        "answer the model does not rank first among the candidates (they stay in the measurement: every "
        "model sees the same prompts).",
        "",
        markdown_table(table),
    ])


def _image(images: Mapping[str, str], key: str, alt: str) -> list[str]:
    """A Markdown image line for ``key`` when its source is known (nothing otherwise)."""
    return [f"![{alt}]({images[key]})", ""] if key in images else []


def figures_section(models: list[str], tau: float, ablation: str, output_dir: str,
                    images: Mapping[str, str] | None = None, pair: Pair = PAPER_PAIR) -> str:
    """Each figure with one sentence on what it shows, where the files land, and (given ``images``:
    dataset name, or ``layer_hists/<key>``, -> image source) the figure itself."""
    images = images or {}
    lines = [
        "## Figures",
        "",
        f"All figures use {ablation} ablation and τ = {tau:g}. Figures are versioned datasets: each run writes "
        f"`{output_dir}/<file>/<version>/<file>` (the version is the run's timestamp); the layer "
        f"histograms are overwritten in `{output_dir}/{LAYER_HISTS_DIR}/`. `report.html` beside this report "
        "holds every figure and an interactive phase space (hover a head for its numbers).",
        "",
        INTERACTIVE_MARK,
        "",
    ]
    for fig in FIGURES:
        lines += _image(images, fig.dataset, fig.file_name)
        lines += [f"- `{fig.file_name}` (dataset `{fig.dataset}`): {fig.caption.format(**pair_words(pair))}", ""]
    for m in models:
        key = f"{LAYER_HISTS_DIR}/{layer_hist_key(m)}"
        lines += _image(images, key, f"{key}.png")
        lines += [f"- `{key}.png` (dataset `layer_hists`): strong heads of each category per layer of {m} at "
                  f"τ = {tau:g}, stacked, with the depth fraction on the top axis.", ""]
    return "\n".join(lines).rstrip()


def strong_counts_section(counts: pd.DataFrame, pair: Pair = PAPER_PAIR) -> str:
    """One table per τ: heads per category and model, as ``count (robust)``."""
    lines = [
        "## Strong heads",
        "",
        "Heads per category as `count (robust)`: robust heads are those whose 95% interval lies entirely "
        "beyond τ for each task they are strong on.",
    ]
    for tau, rows in counts.groupby("tau", sort=True):
        cells = rows.assign(cell=rows["count"].astype(str) + " (" + rows["n_robust"].astype(str) + ")")
        table = cells.pivot(index="model", columns="category", values="cell").reindex(columns=list(pair.categories))
        table = table.reindex(model_order(rows)).reset_index()
        default = " (default)" if bool(rows["is_default_tau"].iloc[0]) else ""
        lines += ["", f"### τ = {tau:g}{default}", "", markdown_table(table)]
    return "\n".join(lines)


def correlation_section(corr: pd.DataFrame, pair: Pair = PAPER_PAIR) -> str:
    """Pearson and Spearman of the pair's Δ (Δ_IOI vs Δ_anti) per model, over all heads, with bootstrap
    intervals."""
    corr = _ordered(corr)
    table = pd.DataFrame({
        "model": corr["model"],
        "family": corr["family"],
        "tuning": corr["tuning"].map(tuning_word),
        "params": corr["n_params"].map(format_params),
        "heads": corr["n_heads"],
        "Pearson r": [with_interval(*v) for v in corr[["pearson", "pearson_low", "pearson_high"]].to_numpy()],
        "Spearman ρ": [with_interval(*v) for v in corr[["spearman", "spearman_low", "spearman_high"]].to_numpy()],
        "gap ok": corr["gap_ok"].map({True: "yes", False: "**NO**"}),
    })
    level, n_boot = float(corr["level"].iloc[0]), int(corr["n_boot"].iloc[0])
    return "\n".join([
        "## Correlation of {dx} and {dy}".format(**pair_words(pair)),
        "",
        f"Over all heads of each model (no top-k selection), with {level:.0%} percentile bootstrap "
        f"intervals from {n_boot} resamples of heads.",
        "",
        markdown_table(table),
    ])


def _score_lines(heads: pd.DataFrame, score: str) -> list[str]:
    """A task's own per-head score beside its Δ: rank agreement and the heads with the largest |Δ|."""
    task = score.removesuffix("_score")
    lines = [f"`{score}` beside Δ_{task}: Spearman ρ between the score and −Δ_{task} over all heads, the mean score "
             f"of the heads strong on {task} against the others', and the three heads with the largest |Δ_{task}|:", ""]
    for model, rows in heads.groupby("model", sort=False):
        rho = rows[score].corr(-rows[f"delta_{task}"], method="spearman")
        strong = rows[f"strong_{task}"]
        means = f"mean score {rows.loc[strong, score].mean():.2f} (strong) vs {rows.loc[~strong, score].mean():.2f}"
        top = rows.reindex(rows[f"delta_{task}"].abs().nlargest(3).index)
        named = ", ".join(f"L{r.layer}H{r.head} (Δ {getattr(r, f'delta_{task}'):+.3f}, score "
                          f"{getattr(r, score):.2f})" for r in top.itertuples())
        lines.append(f"- {model}: ρ = {rho:.2f}; {means}; {named}")
    return lines


def task_roles_section(counts: pd.DataFrame, task_corr: pd.DataFrame, heads: pd.DataFrame,
                       images: Mapping[str, str]) -> str:
    """Roles over every task of a run with more than two: heads per role signature, the correlations of
    Δ between tasks, and each task's own per-head score (nothing for a run of two tasks)."""
    tasks = list(dict.fromkeys([task_corr["task_x"].iloc[0], *task_corr["task_y"]]))
    if len(tasks) <= 2:
        return ""
    counts, tau = default_tau_rows(counts)
    strong = _ordered(counts[counts["signature"] != "none"])
    table = pd.DataFrame({"model": strong["model"], "signature": strong["signature"], "heads": strong["count"],
                          "robust": strong["n_robust"], "share of heads": strong["frac"].map("{:.1%}".format)})
    corr = _ordered(task_corr)
    pairs = pd.DataFrame({
        "model": corr["model"], "tasks": corr["task_x"] + " vs " + corr["task_y"],
        "Pearson r": [with_interval(*v) for v in corr[["pearson", "pearson_low", "pearson_high"]].to_numpy()],
        "Spearman ρ": [with_interval(*v) for v in corr[["spearman", "spearman_low", "spearman_high"]].to_numpy()],
    })
    lines = [
        "## Roles over all tasks",
        "",
        f"This run measured {len(tasks)} tasks ({', '.join(tasks)}). A head's role signature is the set of tasks "
        f"on which it is strong (|Δ| ≥ τ = {tau:g}); the four categories above are those of the pair. "
        "`robust` counts heads whose 95% interval clears τ on every task of their signature.",
        "",
        *_image(images, TASK_ROLES_FIGURE.dataset, TASK_ROLES_FIGURE.file_name),
        f"- `{TASK_ROLES_FIGURE.file_name}` (dataset `{TASK_ROLES_FIGURE.dataset}`): {TASK_ROLES_FIGURE.caption}",
        "",
        "### Heads per role signature",
        "",
        markdown_table(table),
        "",
        "### Correlation of Δ between tasks",
        "",
        f"Over all heads of each model, {float(corr['level'].iloc[0]):.0%} bootstrap intervals over heads "
        "(tables `signature_counts` and `task_correlations`).",
        "",
        markdown_table(pairs),
    ]
    for score in (c for c in heads.columns if c.endswith("_score")):
        lines += ["", *_score_lines(heads, score)]
    return "\n".join(lines)


def attribution_section(agreement: pd.DataFrame, models: list[str]) -> str:
    """Agreement of attribution patching with the exact Δ, per model (in ``models`` order), task and τ."""
    lines = [
        "## Attribution patching agreement",
        "",
        "Attribution patching (one forward and one backward pass for all heads) against the exact ablation Δ, "
        "over the heads measured exactly on the task (`n_heads`; all of them unless the run screened): Spearman "
        "and Pearson correlation, the share of the `n_strong` heads "
        "with exact |Δ| ≥ τ found among the k = `n_strong` (and 2k) largest estimates, and the share of those "
        "strong heads whose estimate has the right sign.",
        "",
    ]
    if agreement.empty:
        return "\n".join([*lines, "No attribution agreement was recorded."])
    columns = [c for c in ("model", "task", "n_heads", "spearman", "pearson", "tau", "n_strong", "recall_at_k",
                           "recall_at_2k", "sign_agreement") if c in agreement.columns]
    rank = {model: i for i, model in enumerate(models)}
    agreement = agreement.sort_values("model", key=lambda s: s.map(rank), kind="stable")
    return "\n".join([*lines, markdown_table(agreement[columns], "{:.2f}")])


def training_section(corr: pd.DataFrame, counts: pd.DataFrame, images: Mapping[str, str],
                     pair: Pair = PAPER_PAIR) -> str:
    """Across training steps, for runs with a series of checkpoints (empty otherwise)."""
    names = series(corr)
    if not names:
        return ""
    default, tau = default_tau_rows(counts)
    wide = default.pivot_table(index="model", columns="category", values="count", aggfunc="first")
    corr = with_steps(corr)
    lines = ["## Across training", "",
             "The {dx}–{dy} correlation over all heads".format(**pair_words(pair))
             + f" and the strong heads per category at τ = {tau:g}, at each checkpoint of " + ", ".join(names) + "."]
    for name in names:
        rows = corr[corr["base_model"] == name].dropna(subset=["training_step"]).sort_values("training_step")
        table = pd.DataFrame({
            "checkpoint": rows["model"].str.partition("@")[2], "step": rows["training_step"].astype(int),
            "Pearson r": [with_interval(*v, "{:.2f}") for v in rows[["pearson", "pearson_low", "pearson_high"]]
                          .to_numpy()],
            **{c: wide.reindex(rows["model"])[c].fillna(0).astype(int).to_numpy() for c in pair.strong_categories},
            "gap ok": rows["gap_ok"].map({True: "yes", False: "**NO**"}).to_numpy(),
        })
        lines += ["", f"### {name}", "", markdown_table(table)]
    key = f"{TRAINING_DIR}/training_dynamics"
    lines += [""] + _image(images, key, "training_dynamics.png") + [
        f"- `{key}.png` (dataset `training_plots`): the correlation against training step (one line per model "
        "size, 95 % interval band), strong-head counts per category, and the Δ of the last checkpoint's hero "
        "heads at every checkpoint."]
    return "\n".join(lines)


def screening_section(heads: pd.DataFrame) -> str:
    """In a screening run: per model and task, how many heads were measured exactly and how large the
    largest estimate left unmeasured is."""
    columns = [c for c in heads.columns if c.startswith("measured_by_")]
    tasks = [c.removeprefix("measured_by_") for c in columns]
    if not columns or (heads[columns] == "exact").all().all():
        return ""
    lines = ["## Screening", "",
             "This run screened heads by attribution patching and measured exactly, task by task, only the heads "
             "whose estimate for that task could reach the smallest τ (docs/metrics.md, \"Screening\"). A Δ only "
             "estimated keeps its attribution value and interval; no category, count, figure or hero depends on "
             "it being exact, since it is weak at every τ of the run.", ""]
    for model, rows in heads.groupby("model", sort=False):
        parts = []
        for task in tasks:
            estimated = rows[rows[f"measured_by_{task}"] == "estimate"]
            largest = estimated[f"delta_{task}"].abs().max() if len(estimated) else 0.0
            parts.append(f"{task}: {len(rows) - len(estimated)} of {len(rows)} heads measured exactly, "
                         f"the largest |Δ| only estimated {largest:.3f}")
        lines.append(f"- {model}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def build_report(
    baseline: pd.DataFrame,
    run_metadata: Mapping[str, Any],
    head_categories: pd.DataFrame,
    strong_head_counts: pd.DataFrame,
    correlations: pd.DataFrame,
    attribution_agreement: pd.DataFrame,
    output_dir: str,
    hero: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
    images: Mapping[str, str] | None = None,
    roles: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    pair: Pair = PAPER_PAIR,
    published: tuple[str, str] = ("", ""),
) -> str:
    """The whole Markdown report (with the hero-heads section when its tables are given, the roles over
    every task when ``roles`` (signature counts, task correlations) are, the figures themselves where
    ``images`` gives their sources, and ``published``: the run beside the published results, after the
    comparison of models, and the audit of the published tables, last (:mod:`ioi_anti.analysis.against_published`,
    :mod:`ioi_anti.analysis.published`)); categories, correlations and heroes are those of ``pair``."""
    heads, tau = default_tau_rows(head_categories)
    warnings = warnings_section(baseline, heads)
    sections = [
        f"# {pair.x.label} and {pair.y.label}: per-head ablation report",
        warnings,
        comparison_section(baseline, heads, correlations, tau, pair),
        published[0],
        figures_section(model_order(heads), tau, ablation_label(heads), output_dir, images, pair),
        run_section(run_metadata, head_categories),
        baseline_section(baseline),
        strong_counts_section(strong_head_counts, pair),
        correlation_section(correlations, pair),
        training_section(correlations, strong_head_counts, images or {}, pair),
        screening_section(heads),
        task_roles_section(*roles, heads, images or {}) if roles is not None else "",
        attribution_section(attribution_agreement, model_order(heads)),
        hero_section(*hero, output_dir, images, pair) if hero is not None else "",
        published[1],
    ]
    return label_models("\n\n".join(s for s in sections if s), quantisations(heads)) + "\n"


def routes_section(hero_routes: pd.DataFrame, output_dir: str, images: Mapping[str, str],
                   pair: Pair = PAPER_PAIR) -> list[str]:
    """Where each hero's effect goes (verdicts and route shares), the shared heroes' answers, the figures."""
    if hero_routes.empty:
        return []
    lines = ["### Where each hero's effect goes", "",
             "Each hero's total Δ is split by the first component that reads its output: the unembedding "
             "(`direct`), the attention heads of each category in later layers (q, k and v together), the MLPs "
             "(its own layer's included), and the `remainder` = total − the sum of the routes, which is the part "
             "that needs the hero's output at two readers at once. Shares are of the hero's total Δ; the verdict "
             "names a route carrying at least half of it (docs/metrics.md gives the rules). Table: "
             "`hero_routes.csv`; every per-layer part: `hero_decomposition.parquet`.", ""]
    routes = route_names(pair)
    shown = hero_routes.assign(
        total=[with_interval(r.total, r.total_low, r.total_high) for r in hero_routes.itertuples()],
        **{route: hero_routes[route].map(percent_text) for route in (*routes, REMAINDER)})
    lines += [markdown_table(shown[["model", "hero", "category", "task", "total", "verdict", *routes, REMAINDER]]), ""]
    answers = shared_hero_answers(hero_routes, pair)
    lines += ["**Do shared heroes do both jobs themselves, or route into other heads?**", ""]
    lines += ([markdown_table(answers), ""] if not answers.empty
              else ["No shared hero in this run: no head's interval clears τ on both tasks.", ""])
    for model in hero_routes["model"].unique():
        key = f"{DECOMPOSITION_DIR}/{decomposition_key(model)}"
        lines += _image(images, key, f"{key}.png")
        lines += [f"- `{key}.png` (dataset `hero_decomposition_plots`, in `{output_dir}/`): each hero of {model} "
                  "per task, its total Δ built up route by route with the remainder hatched, and the part read by "
                  "each later layer's attention and MLP.", ""]
    return lines


def hero_section(heroes: pd.DataFrame, paths: pd.DataFrame, attention: pd.DataFrame, hero_routes: pd.DataFrame,
                 output_dir: str, images: Mapping[str, str] | None = None, pair: Pair = PAPER_PAIR) -> str:
    """Hero heads: the selection, where their effect goes, their mediators and attention, and the figures."""
    lines = ["## Hero heads", ""]
    if heroes.empty:
        return "\n".join([*lines, "No head's interval clears τ for any category: no hero heads in this run."])
    lines += ["Selected per model: the strongest head of each category whose 95 % interval clears τ (`auto`), "
              "plus heads named in `hero_heads.named` (`named`). Table: `hero_heads_for_paper.csv`.", ""]
    shown = heroes[["model", "hero", "category", "category_robust", "selected_by",
                    *(f"delta_{task}" for task in table_tasks(heroes))]]
    lines += [markdown_table(shown), ""]
    lines += routes_section(hero_routes, output_dir, images or {}, pair)
    fixed = paths[paths["path"].isin(["total", "direct", "all paths"])]
    if not fixed.empty:
        wide = fixed.pivot_table(index=["model", "hero", "task"], columns="path", values="delta").reset_index()
        lines += ["Total vs direct effect (Δ, fraction of the task gap; `all paths` patches the head's output into "
                  "every downstream reader at once and must equal `total`):", "", markdown_table(wide), ""]
        receivers = paths[~paths["path"].isin(["total", "direct", "all paths"])]
        if not receivers.empty:
            top = (receivers.assign(size=receivers["delta"].abs()).sort_values("size", ascending=False)
                   .groupby(["model", "hero", "task"], sort=False).head(3))
            lines += ["Strongest mediators (downstream head and input through which the hero's output acts):", "",
                      markdown_table(top[["model", "hero", "task", "path", "receiver_category", "delta",
                                          "delta_low", "delta_high"]]), ""]
    if not attention.empty:
        lines += ["Attention from END (mean over prompts):", "",
                  markdown_table(attention[["model", "hero", "task", "target", "mean"]]), ""]
    for fig in HERO_FIGURES:
        lines += _image(images or {}, fig.dataset, fig.file_name)
        lines += [f"- `{fig.file_name}` (dataset `{fig.dataset}`, in `{output_dir}/`): {fig.caption}", ""]
    return "\n".join(lines).rstrip()

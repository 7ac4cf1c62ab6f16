"""Reporting: every figure and the report from synthetic tables, flagging of gap_ok False, pipelines, catalog."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from base_params import settings
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from synthetic import (
    FOUR_MODELS,
    HERO_MODELS,
    OFFLINE_FOUR,
    SINGLE_MODEL,
    SyntheticModel,
    make_attribution_agreement,
    make_baseline,
    make_hero_studies,
    make_heroes,
    make_per_head,
    make_run_metadata,
)

from ioi_anti.analysis.against_published import HERO_COLUMNS, MODEL_COLUMNS
from ioi_anti.analysis.categories import default_tau_rows, run_pair
from ioi_anti.figures import style as plotting
from ioi_anti.figures.style import GAP_WARNING
from ioi_anti.hero.routes import route_table
from ioi_anti.params import Categorisation, Reporting, Verdict
from ioi_anti.pipelines import categorisation, published, reporting
from ioi_anti.pipelines.categorisation.nodes import (
    categorise_heads,
    correlate_deltas,
    correlate_tasks,
    count_heads_by_layer,
    count_signatures,
    count_strong_heads,
)
from ioi_anti.pipelines.reporting import nodes
from ioi_anti.report.markdown import markdown_table
from ioi_anti.report.registry import FIGURES, HERO_FIGURES, TASK_ROLES_FIGURE, SavedFigure, decomposition_key
from ioi_anti.report.sections import screening_section

PROJECT = Path(__file__).resolve().parents[1]
CONF = PROJECT / "conf"
CAT_PARAMS = Categorisation(pair=["ioi", "anti"], tau=0.05, sensitivity_taus=[0.03, 0.05], n_boot=100,
                            ci_level=0.95, n_depth_bins=5)
TASKS = ["ioi", "anti"]
REP_PARAMS = Reporting(fig_width_in=7.0, font_size=8, panel_height_in=2.2, output_dir="data/08_reporting")
FLAGGED = (*FOUR_MODELS[:3], dataclasses.replace(FOUR_MODELS[3], gap_ok=False))
RUNS = {"four": FOUR_MODELS, "single": SINGLE_MODEL, "flagged": FLAGGED, "offline": OFFLINE_FOUR}
HERO_INPUTS = ("hero_heads_for_paper", "hero_paths", "hero_attention", "hero_routes")
VERDICT = Verdict(main_share=0.5, min_share=0.2)
PUBLISHED_AUDIT = pd.DataFrame([{"model": "all", "check": "duplicate_rows", "count": 0, "value": np.nan,
                                 "published": np.nan, "examples": "", "finding": "No row is listed twice."}])


def tables_for(models: tuple[SyntheticModel, ...], per_head: pd.DataFrame | None = None,
               tasks: list[str] = TASKS, pair: list[str] = CAT_PARAMS.pair) -> dict[str, Any]:
    """Every input of the reporting pipeline, built through the categorisation nodes (on ``per_head``, by
    default that of ``models``, and the run's ``tasks`` and ``pair``).

    Hero heads are those of :func:`synthetic.make_heroes` for the models of the run that it knows.
    """
    per_head = make_per_head(models) if per_head is None else per_head
    params = CAT_PARAMS.model_copy(update={"pair": pair})
    head_categories = categorise_heads(per_head, tasks, params)
    heroes = make_heroes(per_head, {m: n for m, n in HERO_MODELS.items() if m in set(per_head["model"])})
    studies = make_hero_studies(heroes, per_head)
    return {
        "per_head": per_head,
        "head_categories": head_categories,
        "strong_head_counts": count_strong_heads(head_categories, tasks, pair),
        "layer_counts": count_heads_by_layer(head_categories, tasks, params),
        "correlations": correlate_deltas(per_head, tasks, params, seed=0),
        "signature_counts": count_signatures(head_categories),
        "task_correlations": correlate_tasks(per_head, CAT_PARAMS, seed=0),
        "baseline": make_baseline(per_head),
        "run_metadata": make_run_metadata(per_head),
        "attribution_agreement": make_attribution_agreement(per_head),
        "hero_heads_for_paper": heroes,
        "hero_paths": studies["paths"],
        "hero_attention": studies["attention"],
        "hero_decomposition": studies["decomposition"],
        "hero_routes": route_table(studies["decomposition"], heroes, CAT_PARAMS.tau, VERDICT,
                                   run_pair(tasks, pair)),
        "tasks": tasks, "pair": pair,
    }


@pytest.fixture(scope="module", params=list(RUNS))
def run(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, tables_for(RUNS[request.param])


def figures_of(tables: dict[str, Any]) -> dict[str, Figure]:
    run = (tables["tasks"], tables["pair"])
    figures = {
        "corr_vs_scale_cross_family_plot": nodes.plot_corr_vs_scale(tables["correlations"], *run, REP_PARAMS),
        "strong_head_scaling_plot": nodes.plot_strong_head_scaling(tables["strong_head_counts"], *run, REP_PARAMS),
        "all_heads_phase_space_plot": nodes.plot_all_heads_phase_space(tables["head_categories"], *run, REP_PARAMS),
        "family_grid_plot": nodes.plot_family_grid(tables["head_categories"], *run, REP_PARAMS),
        "task_roles_plot": nodes.plot_task_roles(tables["signature_counts"], tables["task_correlations"],
                                                 tables["tasks"], REP_PARAMS),
    }
    return figures | nodes.plot_layer_hists(tables["layer_counts"], *run, REP_PARAMS)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def saved_figures(tables: dict[str, Any]) -> dict[str, SavedFigure]:
    """Every figure the report shows, as the catalog would load it (hero figures: a stand-in plot)."""
    out = REP_PARAMS.output_dir
    figures = figures_of(tables)
    stand_in = _png(figures["all_heads_phase_space_plot"])
    saved = {fig.dataset: SavedFigure(f"{out}/{fig.file_name}/v1/{fig.file_name}", _png(figures[fig.dataset]))
             for fig in (*FIGURES, TASK_ROLES_FIGURE)}
    saved |= {fig.dataset: SavedFigure(f"{out}/{fig.file_name}/v0/{fig.file_name}", stand_in) for fig in HERO_FIGURES}
    saved["layer_hists"] = {key: (lambda key=key: SavedFigure(f"{out}/layer_hists/{key}.png", _png(figures[key])))
                            for key in figures if key.startswith("layer_hist_")}
    saved["training_plots"] = {}
    saved["hero_decomposition_plots"] = {
        decomposition_key(model): (lambda model=model: SavedFigure(f"{out}/hero_decomposition/{model}.png", stand_in))
        for model in tables["hero_heads_for_paper"]["model"].unique()}
    return saved


def report_pages_of(tables: dict[str, Any], run_metadata: dict[str, Any] | None = None) -> tuple[str, str]:
    return nodes.write_report(
        tables["baseline"], tables["run_metadata"] if run_metadata is None else run_metadata,
        tables["head_categories"], tables["strong_head_counts"], tables["correlations"],
        tables["attribution_agreement"], *(tables[name] for name in HERO_INPUTS),
        nodes.plot_interactive_phase_space(tables["head_categories"], tables["tasks"], tables["pair"]),
        signature_counts=tables["signature_counts"], task_correlations=tables["task_correlations"],
        published_audit=PUBLISHED_AUDIT, published_comparison=pd.DataFrame(columns=MODEL_COLUMNS),
        published_hero_comparison=pd.DataFrame(columns=HERO_COLUMNS),
        tasks=tables["tasks"], pair=tables["pair"], params=REP_PARAMS, **saved_figures(tables),
    )


def report_of(tables: dict[str, Any], run_metadata: dict[str, Any] | None = None) -> str:
    return report_pages_of(tables, run_metadata)[0]


def _labelled(fig: Figure) -> bool:
    """The figure has data axes, and x and y labels on them or as figure super-labels."""
    data_axes = [ax for ax in fig.axes if ax.axison and (ax.collections or ax.lines or ax.patches)]
    x_ok = fig.get_supxlabel() or any(ax.get_xlabel() for ax in data_axes)
    y_ok = fig.get_supylabel() or any(ax.get_ylabel() for ax in data_axes)
    return bool(data_axes) and bool(x_ok) and bool(y_ok)


def test_every_figure_is_drawn_labelled_and_saved(run: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    name, tables = run
    figures = figures_of(tables)
    models = tables["per_head"]["model"].unique()
    assert {k for k in figures if k.startswith("layer_hist_")} == {f"layer_hist_{m}" for m in models}
    for key, fig in figures.items():
        assert isinstance(fig, Figure) and fig.axes, key
        assert _labelled(fig), key
        title = fig.get_suptitle()
        assert "mean ablation" in title, key
        assert "τ = 0.05" in title or "no τ threshold" in title, key
        assert all(t.get_fontsize() >= 8 for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))), key
        path = tmp_path / f"{name}_{key}.png"
        fig.savefig(path, dpi=60)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000, key


def test_flagged_model_is_visible_in_every_figure() -> None:
    tables = tables_for(FLAGGED)
    figures = figures_of(tables)
    for key in ("corr_vs_scale_cross_family_plot", "strong_head_scaling_plot", "family_grid_plot"):
        assert GAP_WARNING in figures[key].get_suptitle() and "opt-125m" in figures[key].get_suptitle(), key
    phase = figures["all_heads_phase_space_plot"]
    assert "not shown" in phase.get_suptitle() and "opt-125m" in phase.get_suptitle()
    shown = sum(len(c.get_offsets()) for c in phase.axes[0].collections)
    assert shown == len(tables["per_head"][tables["per_head"]["gap_ok"]])
    grid_titles = [ax.get_title() for ax in figures["family_grid_plot"].axes]
    assert any("opt-125m" in t and GAP_WARNING in t for t in grid_titles)
    assert GAP_WARNING in figures["layer_hist_opt-125m"].get_suptitle()
    assert GAP_WARNING not in figures["layer_hist_gpt2"].get_suptitle()


def test_all_flagged_models_are_shown_rather_than_an_empty_figure() -> None:
    tables = tables_for((dataclasses.replace(SINGLE_MODEL[0], gap_ok=False),))
    figures = figures_of(tables)
    phase = figures["all_heads_phase_space_plot"]
    assert sum(len(c.get_offsets()) for c in phase.axes[0].collections) == len(tables["per_head"])
    for key in ("all_heads_phase_space_plot", "strong_head_scaling_plot"):
        assert f"flagged ({GAP_WARNING}): smollm2-135m" in figures[key].get_suptitle(), key
    assert "WARNING — smollm2-135m" in report_of(tables)


def test_unflagged_run_has_no_warning() -> None:
    tables = tables_for(FOUR_MODELS)
    assert all(GAP_WARNING not in fig.get_suptitle() for fig in figures_of(tables).values())
    assert "WARNING" not in report_of(tables)


def test_family_grid_has_one_panel_per_model_in_family_rows() -> None:
    tables = tables_for(FOUR_MODELS)
    fig = nodes.plot_family_grid(tables["head_categories"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    titles = [ax.get_title().split(" ")[0] for ax in fig.axes if ax.axison]
    assert titles == ["gpt2", "gpt2-medium", "opt-125m", "pythia-160m"]  # family order, then size
    assert len(fig.axes) == 3 * 2  # rows gpt2, opt, pythia; two columns


def test_corr_table_is_ordered_and_complete() -> None:
    tables = tables_for(FOUR_MODELS)
    table = nodes.corr_vs_scale_table(tables["correlations"])
    assert table["model"].tolist() == ["gpt2", "gpt2-medium", "opt-125m", "pythia-160m"]
    assert list(table.columns) == list(nodes.CORR_TABLE_COLUMNS)


def test_report_contents(run: tuple[str, dict[str, Any]]) -> None:
    name, tables = run
    report = report_of(tables)
    meta = tables["run_metadata"]
    for model in meta["models"]:
        assert model in report
        assert f"layer_hists/layer_hist_{model}.png" in report
    assert "Clean prompts per task: ioi 40, anti 45" in report
    assert "Ablation: mean" in report
    assert "τ (strong head: |Δ| ≥ τ): 0.05; sensitivity τ: 0.03, 0.05" in report
    assert "Seed: 0; device: cpu" in report and "- Precision: float32\n" in report
    assert "| torch | 2.13.0 |" in report
    assert "data/08_reporting/<file>/<version>/<file>" in report
    for fig in FIGURES:
        assert f"`{fig.file_name}`" in report
    for heading in ("## Baseline", "## Strong heads", "### τ = 0.03", "### τ = 0.05 (default)",
                    "## Correlation of Δ_IOI and Δ_anti", "## Attribution patching agreement", "## Hero heads"):
        assert heading in report
    hero_section = report.split("## Hero heads")[1]
    no_heroes = not set(HERO_MODELS) & set(meta["models"])  # single, offline: no synthetic hero
    assert ("no hero heads in this run" in hero_section) == no_heroes
    assert all((f"`{fig.file_name}`" in hero_section) != no_heroes for fig in HERO_FIGURES)
    n_strong_rows = report.split("### τ = 0.05 (default)")[1].split("##")[0].count("\n| ")
    assert n_strong_rows == len(meta["models"]) + 1  # header + one row per model
    assert ("WARNING — opt-125m" in report) == (name == "flagged")


def test_report_counts_match_the_table() -> None:
    tables = tables_for(FOUR_MODELS)
    counts = tables["strong_head_counts"]
    row = counts[(counts["model"] == "gpt2") & (counts["tau"] == 0.05) & (counts["category"] == "IOI-only")].iloc[0]
    section = report_of(tables).split("### τ = 0.05 (default)")[1]
    gpt2_line = next(line for line in section.splitlines() if line.startswith("| gpt2 |"))
    assert gpt2_line.split(" | ")[1] == f"{row['count']} ({row['n_robust']})"


def test_report_tolerates_missing_metadata() -> None:
    tables = tables_for(SINGLE_MODEL)
    report = report_of(tables, run_metadata={"models": ["smollm2-135m", "gpt2-xl"], "commit": "abc123"})
    assert "Clean prompts per task: ioi not recorded, anti not recorded" in report
    assert "Seed: not recorded" in report and "Precision: not recorded" in report
    assert "Package versions: not recorded" in report
    mixed = report_of(tables, run_metadata={"runtime": {"dtype": "bfloat16", "tf32": False}, "device": "cpu"})
    assert "- Precision: mixed bfloat16: the blocks' matrix products in bfloat16; norms, softmax" in mixed
    assert "absent from the per-head results: gpt2-xl" in report
    assert "- commit: abc123" in report


def test_markdown_table_formats_and_escapes() -> None:
    frame = pd.DataFrame({"a": ["x|y", "z"], "b": [0.12345, np.nan], "c": [3, 4]})
    assert markdown_table(frame).splitlines() == [
        "| a | b | c |", "|---|---|---|", r"| x\|y | 0.123 | 3 |", "| z | – | 4 |",
    ]


def test_family_order_matches_the_model_registry() -> None:
    from ioi_anti.models.spec import FAMILIES

    assert plotting.FAMILY_ORDER == FAMILIES


def test_figure_style_rejects_small_fonts() -> None:
    with pytest.raises(ValueError, match="font_size"):
        plotting.FigureStyle(font_size=6)


def test_reporting_pipeline_assembles() -> None:
    pipeline = reporting.create_pipeline()
    assert pipeline.inputs() == {
        "head_categories", "strong_head_counts", "layer_counts", "correlations", "baseline", "run_metadata",
        "attribution_agreement", *HERO_INPUTS, "params:reporting", *(fig.dataset for fig in HERO_FIGURES),
        "published_audit", "published_comparison", "published_hero_comparison",
        "hero_decomposition_plots", "signature_counts", "task_correlations", "params:tasks",
        "params:categorisation.pair",
    }
    assert pipeline.outputs() == {"corr_vs_scale_cross_family", "report", "report_html"}
    extra = {"layer_hists", "all_heads_phase_space_interactive", "task_roles_plot"}
    assert {fig.dataset for fig in FIGURES} | extra <= pipeline.all_outputs()


def test_report_shows_every_figure_by_a_relative_link_and_the_html_page_embeds_them() -> None:
    tables = tables_for(FOUR_MODELS)
    markdown, html = report_pages_of(tables)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    n_models = tables["per_head"]["model"].nunique()
    n_hero_models = tables["hero_heads_for_paper"]["model"].nunique()
    assert len(links) == len(FIGURES) + n_models + len(HERO_FIGURES) + n_hero_models
    assert "../../corr_vs_scale_cross_family.png/v1/corr_vs_scale_cross_family.png" in links
    assert "../../hero_decomposition/gpt2.png" in links
    assert "../../layer_hists/layer_hist_gpt2.png" in links
    assert html.count('<img src="data:image/png;base64,') == len(links)
    assert "<table>" in html and "Plotly.newPlot" in html and "<!-- interactive" not in html
    # no element loads from the network (plotly.js itself mentions URLs in code for map traces only)
    assert not re.search(r"<(script|img|link|iframe)\b[^>]*\b(src|href)=[\"']?(https?:)?//", html), "needs the network"


def test_interactive_phase_space_has_every_head_and_hover_numbers() -> None:
    tables = tables_for(FOUR_MODELS)
    fig = nodes.plot_interactive_phase_space(tables["head_categories"], TASKS, CAT_PARAMS.pair)
    heads = [trace for trace in fig.data if trace.legendgroup != "categories"]
    assert {trace.name for trace in heads} == set(tables["per_head"]["model"])
    offline = nodes.plot_interactive_phase_space(tables_for(OFFLINE_FOUR)["head_categories"], TASKS, CAT_PARAMS.pair)
    titles = {trace.legendgroup: trace.legendgrouptitle.text for trace in offline.data
              if trace.legendgroup != "categories"}
    assert titles == {"llama": "llama · instruct", "gemma": "gemma · base", "qwen2": "qwen2 · instruct"}
    assert sum(len(trace.x) for trace in heads) == len(tables["per_head"])
    assert all("%{customdata[1]}" in trace.hovertemplate and "Δ_IOI" in trace.hovertemplate for trace in heads)
    families = {trace.legendgroup for trace in heads}
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["all families", *plotting.ordered_families(
        pd.Series(sorted(families)))]


def test_the_phase_spaces_ring_the_quant_sensitive_heads_and_say_so() -> None:
    """Heads whose category moves when their model is re-quantised get a black ring in both static phase
    spaces (with a counted legend entry) and say so in the interactive hover; unmeasured models say nothing."""
    per_head = make_per_head(FOUR_MODELS)
    first = per_head["model"] == per_head["model"].iloc[0]
    per_head["quant_sensitive"] = pd.array([pd.NA] * len(per_head), dtype="boolean")
    per_head.loc[first, "quant_sensitive"] = False
    per_head.loc[per_head.index[first][:3], "quant_sensitive"] = True
    heads = tables_for(FOUR_MODELS, per_head)["head_categories"]
    for draw in (nodes.plot_all_heads_phase_space, nodes.plot_family_grid):
        fig = draw(heads, TASKS, CAT_PARAMS.pair, REP_PARAMS)
        rings = [c for ax in fig.axes for c in ax.collections if c.get_gid() == "quant_sensitive"]
        assert sum(len(c.get_offsets()) for c in rings) == 3, draw.__name__
        labels = [t.get_text() for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if legend
                  for t in legend.get_texts()]
        assert any(label.startswith("quant-sensitive (3)") for label in labels), labels
    unmarked = nodes.plot_all_heads_phase_space(tables_for(FOUR_MODELS)["head_categories"], TASKS, CAT_PARAMS.pair,
                                                REP_PARAMS)
    assert not any("quant-sensitive" in t.get_text() for legend in unmarked.legends for t in legend.get_texts())
    interactive = nodes.plot_interactive_phase_space(heads, TASKS, CAT_PARAMS.pair)
    words = [row[10] for trace in interactive.data if trace.customdata is not None for row in trace.customdata]
    assert words.count("yes") == 3 and "no" in words and "not measured" in words
    assert all("quant-sensitive" in trace.hovertemplate for trace in interactive.data if trace.customdata is not None)


def _config() -> OmegaConfigLoader:
    return OmegaConfigLoader(
        str(CONF), base_env="base", default_run_env="local",
        config_patterns={"catalog": ["catalog_reporting*", "catalog_published*"],
                         "parameters": ["parameters_categorisation*", "parameters_reporting*",
                                        "parameters_published*"]},
    )


def test_catalog_and_parameters_match_the_code() -> None:
    config = _config()
    catalog, params = config["catalog"], config["parameters"]
    pipes = categorisation.create_pipeline() + published.create_pipeline() + reporting.create_pipeline()
    shipped = {name for name, entry in catalog.items() if entry.get("filepath", "").startswith("data/01_raw/")}
    assert shipped == {"published_per_head", "published_correlations", "published_category_counts", "published_heroes"}
    assert pipes.all_outputs() | shipped == set(catalog)
    assert all((PROJECT / catalog[name]["filepath"]).is_file() for name in shipped)
    for fig in FIGURES:
        assert catalog[fig.dataset]["filepath"] == f"{params['reporting']['output_dir']}/{fig.file_name}"
    assert catalog["layer_hists"]["path"] == f"{params['reporting']['output_dir']}/layer_hists"
    assert set(Categorisation.model_fields) == set(params["categorisation"])
    assert set(Reporting.model_fields) == set(params["reporting"])


def test_pipelines_run_through_the_real_catalog(tmp_path: Path) -> None:
    config = _config()
    hero_config = OmegaConfigLoader(str(CONF), base_env="base", default_run_env="local",
                                    config_patterns={"catalog": ["catalog.yml"]})["catalog"]
    # the hero tables (outputs of the hero_heads pipeline) go through their real datasets of catalog.yml
    hero_entries = {name: hero_config[name] for name in ("hero_heads_for_paper", "hero_{study}", "hero_{study}_plot",
                                                         "hero_routes", "hero_decomposition_plots")}
    entries = {}
    for name, entry in (config["catalog"] | hero_entries).items():
        key = "path" if "path" in entry else "filepath"
        shipped = entry[key].startswith("data/01_raw/")  # the published tables: read where the project ships them
        entries[name] = {**entry, key: str((PROJECT if shipped else tmp_path) / entry[key])}
    catalog = DataCatalog.from_config(entries)
    tables = tables_for(FOUR_MODELS)
    for name in ("per_head", "baseline", "run_metadata", "attribution_agreement"):
        catalog[name] = tables[name]
    for name in HERO_INPUTS:
        catalog.save(name, tables[name])
    for fig in HERO_FIGURES:
        catalog.save(fig.dataset, figures_of(tables)["all_heads_phase_space_plot"])
    hero_models = tables["hero_heads_for_paper"]["model"].unique()
    catalog.save("hero_decomposition_plots", {decomposition_key(m): figures_of(tables)["family_grid_plot"]
                                              for m in hero_models})
    typed = settings()  # the groups as Kedro's parameter validation hands them to the nodes
    for name in config["parameters"]:
        catalog[f"params:{name}"] = getattr(typed, name)
    catalog["params:seed"] = 0
    catalog["params:tasks"] = ["ioi", "anti"]
    catalog["params:categorisation.pair"] = config["parameters"]["categorisation"]["pair"]
    pipeline: Pipeline = categorisation.create_pipeline() + published.create_pipeline() + reporting.create_pipeline()
    SequentialRunner().run(pipeline, catalog)
    out = tmp_path / "data"
    # 6 categorisation tables + hero_paths, hero_attention + the audit and two comparison tables; every
    # figure, task roles included
    assert len(list((out / "07_model_output").glob("*.parquet/*/*.parquet"))) == 6 + 2 + 3
    assert len(list((out / "08_reporting").glob("*.png/*/*.png"))) == len(FIGURES) + len(HERO_FIGURES) + 1
    assert next((out / "08_reporting").glob("report.html/*/report.html")).read_text().count("<img") == (
        len(FIGURES) + len(HERO_FIGURES) + tables["per_head"]["model"].nunique() + len(hero_models))
    assert {p.name for p in (out / "08_reporting" / "layer_hists").iterdir()} == {
        f"layer_hist_{m}.png" for m in tables["per_head"]["model"].unique()
    }
    report = next((out / "08_reporting").glob("report.md/*/report.md")).read_text()
    assert report.startswith("# IOI and anti-repetition")
    # the synthetic models carry the names of four published models: the run is set beside them
    comparison = catalog.load("published_comparison")
    assert sorted(comparison["model"]) == ["gpt2", "gpt2-medium", "opt-125m", "pythia-160m"]
    assert "## Against the published results" in report and report.index("## Against") < report.index("## Run")
    assert [line for line in report.splitlines() if line.startswith("## ")][-1] == "## The published tables, audited"
    heroes = tables["hero_heads_for_paper"]
    assert len(heroes) > 0 and all(f"| {r.model} | {r.hero} | {r.category} |" in report for r in heroes.itertuples())
    saved = catalog.load("head_categories")
    assert len(saved) == 2 * len(tables["per_head"])
    assert catalog.load("corr_vs_scale_cross_family")["model"].tolist() == [
        "gpt2", "gpt2-medium", "opt-125m", "pythia-160m",
    ]


def test_models_are_compared_in_words_and_numbers() -> None:
    four = report_of(tables_for(FOUR_MODELS)).split("## Models compared")[1].split("\n## ")[0]
    for model in ("gpt2", "gpt2-medium", "opt-125m", "pythia-160m"):
        assert f"\n| {model} | " in four and f"({model})" in four, model
    assert "IOI gap" in four and "largest share of its heads" in four
    assert "Base (pretrained only): gpt2, gpt2-medium, opt-125m, pythia-160m." in four
    assert "Instruction-tuned" not in four
    single = report_of(tables_for(SINGLE_MODEL)).split("## Models compared")[1].split("\n## ")[0]
    assert "\n| smollm2-135m | " in single and "largest share" not in single


def _families(models: tuple[SyntheticModel, ...]) -> dict[str, int]:
    """Sizes per family of a synthetic run."""
    return pd.Series([m.family for m in models]).value_counts().to_dict()


def _drawn_as_line(line: Line2D) -> bool:
    """The line is drawn between its points (a lone point keeps no line style either)."""
    return line.get_linestyle() != "None"


@pytest.mark.parametrize("models", [OFFLINE_FOUR, FOUR_MODELS, SINGLE_MODEL], ids=["offline", "four", "single"])
def test_scale_figures_draw_a_line_through_a_family_of_several_sizes_and_a_point_for_one_size(
        models: tuple[SyntheticModel, ...]) -> None:
    tables, sizes = tables_for(models), _families(models)
    corr = nodes.plot_corr_vs_scale(tables["correlations"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    scaling = nodes.plot_strong_head_scaling(tables["strong_head_counts"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    for ax in (a for a in corr.axes if a.containers):
        bars = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
        assert set(bars) == set(sizes)
        for family, n in sizes.items():
            data_line = bars[family].lines[0]
            assert len(data_line.get_xdata()) == n and _drawn_as_line(data_line) == (n >= 2), family
    for ax in scaling.axes:
        lines = {line.get_label(): line for line in ax.lines}
        for family, n in sizes.items():
            for label in (family, f"{family} (robust)"):
                assert _drawn_as_line(lines[label]) == (n >= 2), (ax.get_title(), label)
    for fig in (corr, scaling):
        handles = {h.get_label().split(" · ")[0]: h for h in fig.legends[0].legend_handles}
        assert all(_drawn_as_line(handles[f]) == (n >= 2) for f, n in sizes.items())
        assert "a line joins the sizes of a family" in fig.legends[0].get_title().get_text()
        labels = [h.get_label() for h in fig.legends[0].legend_handles]
        assert all(f"{f} · {n} size{'s' if n > 1 else ''}" in " ".join(labels) for f, n in sizes.items())


def test_scale_figures_tell_base_from_instruction_tuned_models() -> None:
    tuning = {m.model: m.tuning for m in OFFLINE_FOUR}
    tables = tables_for(OFFLINE_FOUR)
    corr = nodes.plot_corr_vs_scale(tables["correlations"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    markers = [line for line in corr.axes[0].lines if line.get_linestyle() == "None"]
    faces = {line.get_label(): line.get_markerfacecolor() for line in markers if " " in line.get_label()}
    assert faces == {"llama instruct": "white", "gemma base": plotting.family_colour("gemma"),
                     "qwen2 instruct": "white"}
    labels = [h.get_label() for h in corr.legends[0].legend_handles]
    assert "hollow: instruction-tuned" in labels and "filled: base" in labels
    scaling = nodes.plot_strong_head_scaling(tables["strong_head_counts"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    labels = [h.get_label() for h in scaling.legends[0].legend_handles]
    assert labels == ["llama · 1 size · instruct", "gemma · 1 size · base", "qwen2 · 2 sizes · instruct"]
    grid = nodes.plot_family_grid(tables["head_categories"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    titles = {ax.get_title().split(" ")[0]: ax.get_title() for ax in grid.axes if ax.axison}
    assert all(("instruct" in titles[m]) == (t == "instruct") for m, t in tuning.items())
    base_only = tables_for(FOUR_MODELS)
    corr = nodes.plot_corr_vs_scale(base_only["correlations"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    assert not any("instruct" in h.get_label() for h in corr.legends[0].legend_handles)
    mixed = tables_for((*OFFLINE_FOUR[:2], dataclasses.replace(OFFLINE_FOUR[2], tuning="base"), OFFLINE_FOUR[3]))
    scaling = nodes.plot_strong_head_scaling(mixed["strong_head_counts"], TASKS, CAT_PARAMS.pair, REP_PARAMS)
    assert "qwen2 · 2 sizes · 630M base, 1.8B instruct" in [h.get_label() for h in scaling.legends[0].legend_handles]


def test_tuning_and_quantisation_are_columns_of_every_per_model_table() -> None:
    tables = tables_for(OFFLINE_FOUR)
    for column in ("tuning", "quantisation"):
        expected = {m.model: getattr(m, column) for m in OFFLINE_FOUR}
        for name in ("per_head", "head_categories", "strong_head_counts", "layer_counts", "correlations", "baseline"):
            assert tables[name].groupby("model")[column].first().to_dict() == expected, (name, column)
    corr_table = nodes.corr_vs_scale_table(tables["correlations"])
    assert list(corr_table.columns[:5]) == ["model", "family", "tuning", "quantisation", "n_params"]
    with pytest.raises(ValueError, match="tuning"):
        categorise_heads(tables["per_head"].drop(columns="tuning"), TASKS, CAT_PARAMS)


def test_report_compares_the_four_offline_models_in_one_table_first() -> None:
    report = report_of(tables_for(OFFLINE_FOUR))
    compared = report.split("## Models compared")[1].split("\n## ")[0]
    table = [line for line in compared.splitlines() if line.startswith("|")]
    assert table[0].startswith("| model | family | tuning | params | layers × heads | IOI gap | anti gap | "
                               "Pearson r | IOI-only | anti-only | shared |")
    rows = [line.split(" | ") for line in table[2:]]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("| smollm2-135m (Q4_1)", "llama", "instruction-tuned", "135M", "30 × 9"),
        ("| gemma3-270m (Q4_K_M)", "gemma", "base", "268M", "18 × 4"),
        ("| qwen2.5-coder-0.5b (Q4_K_M)", "qwen2", "instruction-tuned", "630M", "24 × 14"),
        ("| qwen2.5-coder-1.5b (Q4_K_M)", "qwen2", "instruction-tuned", "1.8B", "28 × 12"),
    ]
    # every table of the report names a quantised model with its type, never bare; the run section and a
    # sentence say how the weights are stored
    cells = [cell.strip() for line in report.splitlines() if line.startswith("|") for cell in line.split("|")]
    assert not {m.model for m in OFFLINE_FOUR} & set(cells)
    assert sum(cell.endswith("(Q4_K_M)") for cell in cells) > 12
    assert "Weights: smollm2-135m Q4_1, gemma3-270m Q4_K_M" in compared and "weights Q4_1" in report
    assert compared.index("| model |") < compared.index("Instruction-tuned: smollm2-135m, qwen2.5-coder-0.5b, "
                                                        "qwen2.5-coder-1.5b.")
    assert "Base (pretrained only): gemma3-270m." in compared and "also one between families" in compared
    assert report.index("## Models compared") < report.index("## Figures") < report.index("## Run")
    run = report.split("## Run")[1].split("\n## ")[0]
    assert "- Models (4, by family and size):" in run
    assert "  - gemma3-270m: gemma, base, 268M parameters, 18 layers × 4 heads" in run
    assert "  - qwen2.5-coder-1.5b: qwen2, instruction-tuned, 1.8B parameters, 28 layers × 12 heads" in run
    correlation = report.split("## Correlation of Δ_IOI and Δ_anti")[1]
    assert "| model | family | tuning | params |" in correlation


def test_screening_section_counts_each_task_and_the_largest_estimate_left() -> None:
    heads = pd.DataFrame({
        "model": ["m"] * 4, "layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
        "delta_ioi": [0.2, -0.004, 0.01, 0.001], "delta_anti": [0.002, 0.1, -0.003, 0.0],
        "measured_by_ioi": ["exact", "estimate", "exact", "estimate"],
        "measured_by_anti": ["estimate", "exact", "estimate", "estimate"],
    })
    section = screening_section(heads)
    assert "- m: ioi: 2 of 4 heads measured exactly, the largest |Δ| only estimated 0.004; " in section
    assert "anti: 1 of 4 heads measured exactly, the largest |Δ| only estimated 0.003." in section
    exact = heads.assign(measured_by_ioi="exact", measured_by_anti="exact")
    assert screening_section(exact) == ""


FOUR_TASKS = ["ioi", "anti", "induction", "factual"]


def four_task_heads() -> pd.DataFrame:
    """Two synthetic models' heads with induction and factual Δ beside IOI's and anti-repetition's."""
    rng = np.random.default_rng(5)
    per_head = make_per_head(FOUR_MODELS[:2])
    for task in ("induction", "factual"):
        delta = 0.4 * per_head["delta_ioi"] + rng.laplace(0, 0.02, len(per_head))
        per_head[f"delta_{task}"], per_head[f"delta_{task}_low"] = delta, delta - 0.01
        per_head[f"delta_{task}_high"] = delta + 0.01
    per_head["induction_score"] = np.clip(-per_head["delta_induction"] * 3, 0, 1)
    return per_head


def test_a_run_of_more_than_two_tasks_reports_roles_over_all_of_them() -> None:
    """Signatures, task correlations and a task's own score appear with more than two tasks, not with two."""
    tables = tables_for(FOUR_MODELS[:2], four_task_heads(), FOUR_TASKS)
    section = report_of(tables).split("## Roles over all tasks")[1].split("\n## ")[0]
    assert "This run measured 4 tasks (ioi, anti, induction, factual)" in section
    assert "../../task_roles.png/v1/task_roles.png" in section
    assert "| gpt2-medium | ioi+anti+induction+factual |" in section
    assert "| gpt2-medium | induction vs factual |" in section
    assert "`induction_score` beside Δ_induction" in section and "- gpt2: ρ = " in section
    assert "## Roles over all tasks" not in report_of(tables_for(FOUR_MODELS[:2]))
    assert "| gpt2 | ioi vs anti |" in section
    fig = nodes.plot_task_roles(tables["signature_counts"], tables["task_correlations"], tables["tasks"], REP_PARAMS)
    matrices = [ax for ax in fig.axes if ax.images]
    assert len(matrices) == 2 and [t.get_text() for t in matrices[0].get_yticklabels()] == [
        "IOI", "anti-repetition", "induction", "factual recall"]


def test_categories_figures_and_report_follow_another_pair_of_tasks() -> None:
    """With `categorisation.pair: [induction, ioi]` the categories, counts, correlations, figures and report are
    those of induction (x) and IOI (y), and the interactive phase space switches between all six pairs."""
    per_head = four_task_heads()
    tables = tables_for(FOUR_MODELS[:2], per_head, FOUR_TASKS, ["induction", "ioi"])
    heads = tables["head_categories"]
    strong_x, strong_y = heads["delta_induction"].abs() >= heads["tau"], heads["delta_ioi"].abs() >= heads["tau"]
    expected = np.select([strong_x & strong_y, strong_x, strong_y], ["shared", "induction-only", "IOI-only"], "weak")
    assert (heads["category"] == expected).all() and {"induction-only", "IOI-only"} <= set(heads["category"])
    assert set(tables["strong_head_counts"]["category"]) == {"induction-only", "IOI-only", "shared", "weak"}
    corr = tables["correlations"].set_index("model")
    pairs = tables["task_correlations"].set_index(["model", "task_x", "task_y"])
    for model, row in corr.iterrows():
        assert (row["task_x"], row["task_y"]) == ("induction", "ioi")
        assert row["pearson"] == pytest.approx(pairs.loc[(model, "ioi", "induction"), "pearson"], abs=1e-12)
    figures = figures_of(tables)
    phase = figures["all_heads_phase_space_plot"]
    assert "induction" in phase.axes[0].get_xlabel() and "IOI" in phase.axes[0].get_ylabel()
    legend = [t.get_text() for t in phase.legends[0].get_texts()]
    assert legend[0].startswith("induction-only (") and legend[1].startswith("IOI-only (")
    assert figures["strong_head_scaling_plot"].axes[0].get_title() == "induction-only"
    report = report_of(tables)
    assert report.startswith("# induction and IOI: per-head ablation report")
    assert "| induction gap | IOI gap | Pearson r | induction-only | IOI-only | shared |" in report
    assert "## Correlation of Δ_induction and Δ_IOI" in report
    interactive = nodes.plot_interactive_phase_space(heads, FOUR_TASKS, ["induction", "ioi"])
    menu = interactive.layout.updatemenus[1]
    assert [b.label for b in menu.buttons][:2] == ["induction vs IOI", "IOI vs anti-repetition"]
    assert len(menu.buttons) == 6
    first = interactive.data[0]
    rows, _tau = default_tau_rows(heads)
    model_rows = rows[rows["model"] == first.name]
    assert list(first.x) == model_rows["delta_induction"].tolist()
    restyle, relayout = next(b for b in menu.buttons if b.label == "anti-repetition vs factual recall").args
    assert restyle["x"][0] == model_rows["delta_anti"].tolist()
    assert restyle["y"][0] == model_rows["delta_factual"].tolist()
    x_only = (model_rows["delta_anti"].abs() >= 0.05) & (model_rows["delta_factual"].abs() < 0.05)
    colours = np.array(restyle["marker.color"][0])
    assert (colours[x_only.to_numpy()] == "#D55E00").all() and x_only.any()
    assert relayout["xaxis.title.text"].startswith("Δ_anti (fraction of anti-repetition gap")

"""Hero-head figures and report section from synthetic hero tables: several heroes, one, none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from base_params import settings
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from matplotlib.axes import Axes
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from synthetic import (
    FOUR_MODELS,
    HERO_COLUMNS,
    HERO_MODELS,
    OFFLINE_FOUR,
    STUDY_COLUMNS,
    make_hero_studies,
    make_heroes,
    make_per_head,
)

from ioi_anti.analysis.categories import PAPER_PAIR
from ioi_anti.figures import hero as hero_plots
from ioi_anti.figures.style import FigureStyle
from ioi_anti.hero.routes import REMAINDER, route_names, route_table, verdict
from ioi_anti.params import Verdict
from ioi_anti.report.registry import HERO_FIGURES
from ioi_anti.report.sections import hero_section

ROUTES = route_names(PAPER_PAIR)
PAIR_RUN = (["ioi", "anti"], ["ioi", "anti"])  # the run's tasks and categorisation.pair

VERDICT = Verdict(main_share=0.5, min_share=0.2)
HEROES = settings(hero_heads__top_per_category=1).hero_heads
STYLE = FigureStyle(width_in=7.0, font_size=8, panel_height_in=2.2)
OUTPUT_DIR = "data/08_reporting"
CONF = Path(__file__).resolve().parents[1] / "conf"
PER_HEAD = make_per_head(FOUR_MODELS)


def hero_tables(n_auto: dict[str, int], first: int | None = None) -> dict[str, pd.DataFrame]:
    """Heroes (the ``first`` ones only, if given) and their four study tables."""
    heroes = make_heroes(PER_HEAD, n_auto)
    heroes = heroes if first is None else heroes.iloc[:first].reset_index(drop=True)
    studies = make_hero_studies(heroes, PER_HEAD)
    return {"heroes": heroes, **studies, "routes": route_table(studies["decomposition"], heroes, 0.05, VERDICT)}


CASES = {"several": hero_tables(HERO_MODELS), "single": hero_tables({"gpt2": 1}, first=1)}
EMPTY = hero_tables({})


def figures_of(tables: dict[str, pd.DataFrame]) -> dict[str, Figure]:
    """The four hero figures, keyed by their catalog dataset name."""
    heroes = tables["heroes"]
    return {
        "hero_dose_response_plot": hero_plots.dose_response(tables["dose"], heroes, STYLE),
        "hero_topk_plot": hero_plots.topk(tables["topk"], STYLE),
        "hero_paths_plot": hero_plots.paths(tables["paths"], heroes, STYLE),
        "hero_attention_plot": hero_plots.attention(tables["attention"], heroes, STYLE),
    }


def panels(fig: Figure) -> list[Axes]:
    """Visible axes with their axis drawn (hidden grid slots and 'no heads' panels excluded)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def panel_of(fig: Figure, model: str, hero: str) -> Axes:
    (ax,) = [ax for ax in panels(fig) if ax.get_title().split("\n")[:1] == [model]
             and ax.get_title().split("\n")[1].startswith(f"{hero} ")]
    return ax


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 3_000, path


def test_synthetic_hero_tables_cover_the_cases() -> None:
    heroes = CASES["several"]["heroes"]
    assert set(heroes["model"]) == set(HERO_MODELS) and len(heroes) == sum(HERO_MODELS.values()) + len(HERO_MODELS)
    assert set(PER_HEAD["model"]) - set(heroes["model"]) == {"gpt2-medium", "opt-125m"}  # models without a hero
    assert heroes.duplicated("hero").any()  # the same head name in two models
    assert (heroes["selected_by"] == "named").sum() == len(HERO_MODELS)
    assert EMPTY["heroes"].empty and list(EMPTY["heroes"].columns) == list(heroes.columns)
    assert all(EMPTY[name].empty and list(EMPTY[name].columns) == STUDY_COLUMNS[name] for name in STUDY_COLUMNS)


@pytest.mark.parametrize("case", list(CASES))
def test_every_hero_figure_is_drawn_labelled_and_saved(case: str, tmp_path: Path) -> None:
    tables = CASES[case]
    heroes, topk = tables["heroes"], tables["topk"]
    n_topk = topk["model"].nunique() * topk["category"].nunique()
    expected_panels = {"hero_dose_response_plot": len(heroes), "hero_topk_plot": n_topk,
                       "hero_paths_plot": len(heroes), "hero_attention_plot": len(heroes)}
    for key, fig in figures_of(tables).items():
        assert isinstance(fig, Figure) and fig.get_suptitle(), key
        assert fig.get_size_inches()[0] == pytest.approx(STYLE.width_in), key
        axes = panels(fig)
        assert len(axes) == expected_panels[key], key
        assert any(ax.get_xlabel() for ax in axes), key
        assert fig.get_supylabel() or all(ax.get_yticklabels() for ax in axes), key
        texts = legend_texts(fig)
        assert [t.split(" ")[0] for t in texts] == ["IOI", "anti-repetition"], key
        assert all(t.get_fontsize() >= 8 for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))), key
        save(fig, tmp_path / f"{case}_{key}.png")


def test_each_hero_has_its_own_titled_panel() -> None:
    tables = CASES["several"]
    figures = figures_of(tables)
    for key in ("hero_dose_response_plot", "hero_paths_plot", "hero_attention_plot"):
        titles = [ax.get_title() for ax in panels(figures[key])]
        assert titles == [f"{r.model}\n{r.hero} ({r.category}{', named' if r.selected_by == 'named' else ''})"
                          for r in tables["heroes"].itertuples()], key


def test_dose_response_panels_plot_their_own_model() -> None:
    tables = CASES["several"]
    fig = figures_of(tables)["hero_dose_response_plot"]
    dose = tables["dose"]
    for model in HERO_MODELS:  # L0H11 is a hero of both models
        ax = panel_of(fig, model, "L0H11")
        curves = [line for line in ax.lines if len(line.get_xdata()) > 2]
        colours = PAPER_PAIR.task_colours
        assert [line.get_color() for line in curves] == [colours[t] for t in ("ioi", "anti")]
        for line, task in zip(curves, ("ioi", "anti"), strict=True):
            rows = dose[(dose["model"] == model) & (dose["hero"] == "L0H11") & (dose["task"] == task)]
            np.testing.assert_allclose(line.get_ydata(), rows["delta"])
            np.testing.assert_allclose(line.get_xdata(), rows["alpha"])


def test_topk_has_a_panel_per_model_and_category_with_every_k() -> None:
    topk = CASES["several"]["topk"]
    fig = figures_of(CASES["several"])["hero_topk_plot"]
    titles = [ax.get_title() for ax in panels(fig)]
    assert titles == [f"{m}\ntop-k {c} heads" for m in HERO_MODELS for c in ("IOI-only", "anti-only", "shared")]
    for ax in panels(fig):
        model, category = ax.get_title().split("\n")[0], ax.get_title().split(" ")[1]
        rows = topk[(topk["model"] == model) & (topk["category"] == category)]
        assert list(ax.get_xticks()) == sorted(rows["k"].unique())
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 2
        ioi_y = np.asarray(bars[0].lines[0].get_ydata(), dtype=float)
        np.testing.assert_allclose(ioi_y, rows[rows["task"] == "ioi"]["delta"])


def test_topk_marks_a_category_missing_in_one_model() -> None:
    tables = CASES["several"]
    topk = tables["topk"][~((tables["topk"]["model"] == "pythia-160m") & (tables["topk"]["category"] == "shared"))]
    fig = hero_plots.topk(topk, STYLE)
    assert len(panels(fig)) == 5
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no shared heads"]


def test_paths_show_fixed_paths_then_the_strongest_receivers() -> None:
    tables = CASES["several"]
    fig = figures_of(tables)["hero_paths_plot"]
    paths = tables["paths"]
    for hero in tables["heroes"].itertuples():
        ax = panel_of(fig, hero.model, hero.hero)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[:3] == ["total", "direct", "all paths"]
        rows = paths[(paths["model"] == hero.model) & (paths["hero"] == hero.hero)]
        receivers = rows[~rows["path"].isin(hero_plots.FIXED_PATHS)]
        strongest = receivers.assign(size=receivers["delta"].abs()).groupby("path")["size"].max().nlargest(8)
        assert [label.split(" ")[0] for label in labels[3:]] == list(strongest.index)
        for label in labels[3:]:
            row = receivers[receivers["path"] == label.split(" ")[0]].iloc[0]
            assert label.endswith(f"({PAPER_PAIR.short_category(row.receiver_category)})")
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        ioi = rows[rows["task"] == "ioi"].set_index("path")["delta"]
        order = [*hero_plots.FIXED_PATHS, *strongest.index]
        np.testing.assert_allclose([b.get_width() for b in bars[0]], ioi.reindex(order))
    last_layer = panel_of(fig, "gpt2", "L11H0")  # no downstream head: the fixed paths only
    assert [t.get_text() for t in last_layer.get_yticklabels()] == ["total", "direct", "all paths"]


def test_paths_tolerate_an_interval_that_misses_its_mean() -> None:
    tables = CASES["single"]
    table = tables["paths"].copy()
    table.loc[0, "delta_low"] = table.loc[0, "delta"] + 0.01  # percentile intervals need not contain the mean
    fig = hero_plots.paths(table, tables["heroes"], STYLE)
    assert len(panels(fig)) == 1


def test_attention_bars_are_the_means_with_both_tasks_labelled() -> None:
    tables = CASES["several"]
    fig = figures_of(tables)["hero_attention_plot"]
    attention = tables["attention"]
    for hero in tables["heroes"].itertuples():
        ax = panel_of(fig, hero.model, hero.hero)
        rows = attention[(attention["model"] == hero.model) & (attention["hero"] == hero.hero)]
        np.testing.assert_allclose([p.get_height() for p in ax.patches], rows["mean"])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["IO", "S1", "S2", "all\nitems", "last\nitem"]
        assert ax.get_ylim() == (0, 1)
    assert legend_texts(fig) == ["IOI prompts", "anti-repetition prompts"]


def test_no_hero_heads_gives_a_placeholder_figure(tmp_path: Path) -> None:
    for key, fig in figures_of(EMPTY).items():
        assert len(fig.axes) == 1 and not fig.axes[0].axison, key
        (text,) = fig.axes[0].texts
        expected = "no strong heads" if key == "hero_topk_plot" else "no hero heads in this run"
        assert text.get_text().startswith(expected), key
        assert fig.get_suptitle(), key
        save(fig, tmp_path / f"empty_{key}.png")


def test_hero_section_tables_and_figures() -> None:
    tables = CASES["several"]
    section = hero_section(tables["heroes"], tables["paths"], tables["attention"], tables["routes"], OUTPUT_DIR)
    assert section.startswith("## Hero heads")
    for hero in tables["heroes"].itertuples():
        cells = [hero.model, hero.hero, hero.category, hero.category_robust, hero.selected_by]
        assert "| " + " | ".join(cells) + " |" in section
    for heading in ("Total vs direct effect", "Strongest mediators", "Attention from END"):
        assert heading in section
    fixed = tables["paths"].query("model == 'gpt2' and hero == 'L10H5' and task == 'ioi'").set_index("path")["delta"]
    effects = section.split("Total vs direct effect")[1].split("Strongest mediators")[0]
    (line,) = [line for line in effects.splitlines() if line.startswith("| gpt2 | L10H5 | ioi | ")]
    expected = sorted(f"{fixed[p]:.3f}" for p in ("total", "direct", "all paths"))
    assert sorted(line.strip("| ").split(" | ")[3:]) == expected
    assert "| gpt2 | L10H5 | anti | IO |" not in section and "| gpt2 | L10H5 | ioi | IO |" in section
    for fig in HERO_FIGURES:
        assert f"- `{fig.file_name}` (dataset `{fig.dataset}`, in `{OUTPUT_DIR}/`)" in section


def test_hero_section_without_heroes() -> None:
    section = hero_section(EMPTY["heroes"], EMPTY["paths"], EMPTY["attention"], EMPTY["routes"], OUTPUT_DIR)
    assert section.startswith("## Hero heads")
    assert "no hero heads in this run" in section
    assert not any(fig.file_name in section for fig in HERO_FIGURES)
    assert "|" not in section


def test_hero_figures_and_synthetic_tables_match_the_pipeline_and_catalog() -> None:
    from ioi_anti.hero.study import STUDY_COLUMNS as PIPELINE_COLUMNS
    from ioi_anti.pipelines import hero_heads
    from ioi_anti.pipelines.hero_heads.nodes import select_hero_heads

    assert STUDY_COLUMNS == PIPELINE_COLUMNS
    per_head = make_per_head(OFFLINE_FOUR)
    selected = select_hero_heads(per_head, 0.05, HEROES, *PAIR_RUN)
    assert list(selected.columns) == HERO_COLUMNS
    assert selected.groupby("model")["tuning"].first().to_dict() == {m.model: m.tuning for m in OFFLINE_FOUR}
    more = per_head.assign(delta_induction=0.1, delta_induction_low=0.05, delta_induction_high=0.15,
                           induction_score=0.5)
    with_tasks = select_hero_heads(more, 0.05, HEROES, *PAIR_RUN)
    extra = ["delta_induction", "delta_induction_low", "delta_induction_high", "induction_score"]
    assert list(with_tasks.columns) == HERO_COLUMNS[:14] + extra + HERO_COLUMNS[14:], "every task's Δ beside the pair's"
    assert all(list(CASES["several"][name].columns) == STUDY_COLUMNS[name] for name in STUDY_COLUMNS)

    outputs = hero_heads.create_pipeline().all_outputs()
    config = OmegaConfigLoader(str(CONF), base_env="base", default_run_env="local",
                               config_patterns={"catalog": ["catalog.yml"]})["catalog"]
    resolver = DataCatalog.from_config(config).config_resolver
    for fig in HERO_FIGURES:
        assert fig.dataset in outputs
        assert resolver.resolve_pattern(fig.dataset)["filepath"] == f"{OUTPUT_DIR}/{fig.file_name}"


@pytest.mark.parametrize("case", ["several", "empty"])
def test_hero_tables_round_trip_through_the_catalog(case: str, tmp_path: Path) -> None:
    tables = CASES.get(case, EMPTY)
    config = OmegaConfigLoader(str(CONF), base_env="base", default_run_env="local",
                               config_patterns={"catalog": ["catalog.yml"]})["catalog"]
    entries = {name: {**config[name], "filepath": str(tmp_path / config[name]["filepath"])}
               for name in ("hero_heads_for_paper", "hero_{study}", "hero_routes")}
    catalog = DataCatalog.from_config(entries)
    names = {"heroes": "hero_heads_for_paper", "paths": "hero_paths", "attention": "hero_attention",
             "routes": "hero_routes", "decomposition": "hero_decomposition"}
    for key, name in names.items():
        catalog.save(name, tables[key])
    loaded = {key: catalog.load(name) for key, name in names.items()}
    keys = ("heroes", "paths", "attention", "routes")
    assert hero_section(*(loaded[k] for k in keys), OUTPUT_DIR) == hero_section(*(tables[k] for k in keys), OUTPUT_DIR)
    pd.testing.assert_frame_equal(route_table(loaded["decomposition"], loaded["heroes"], 0.05, VERDICT),
                                  tables["routes"], check_dtype=False)


def test_routes_section_gives_each_heros_verdict_shares_and_figure() -> None:
    tables = CASES["several"]
    section = hero_section(tables["heroes"], tables["paths"], tables["attention"], tables["routes"], OUTPUT_DIR,
                           images={"hero_decomposition/hero_decomposition_gpt2": "gpt2.png"})
    routes = section.split("### Where each hero's effect goes")[1]
    header = next(line for line in routes.splitlines() if line.startswith("| model | hero |"))
    assert header.split(" | ")[4:] == ["total", "verdict", *ROUTES, REMAINDER + " |"]
    for row in tables["routes"].itertuples():
        assert f"| {row.model} | {row.hero} | {row.category} | {row.task} | " in routes
        assert row.verdict in routes
    assert "![hero_decomposition/hero_decomposition_gpt2.png](gpt2.png)" in routes
    assert "`hero_decomposition/hero_decomposition_pythia-160m.png`" in routes
    assert "Do shared heroes do both jobs themselves" in routes


def test_decomposition_figure_shows_every_route_and_the_remainder_per_hero_and_task(tmp_path: Path) -> None:
    tables = CASES["several"]
    for model in tables["heroes"]["model"].unique():
        rows = tables["decomposition"][tables["decomposition"]["model"] == model]
        fig = hero_plots.decomposition(rows, tables["routes"], tables["heroes"], STYLE)
        heroes = tables["heroes"][tables["heroes"]["model"] == model]
        assert len(panels(fig)) == 2 * 2 * len(heroes)  # per hero: routes and layers, per task
        waterfalls = [ax for ax in panels(fig) if [t.get_text() for t in ax.get_yticklabels()][-1:] == ["total"]]
        assert len(waterfalls) == 2 * len(heroes)
        for ax in waterfalls:
            labels = [t.get_text() for t in ax.get_yticklabels()]
            assert [label.split(" (")[0] for label in labels] == [*ROUTES, REMAINDER, "total"]
            hero, task = ax.get_title().split(" (")[0], ax.get_title().split("), ")[1].split("\n")[0]
            task = {"IOI": "ioi", "anti-repetition": "anti"}[task]
            part = rows[(rows["hero"] == hero) & (rows["task"] == task)]
            total = part[part["level"] == "total"]["delta"].iloc[0]
            bars = [p for p in ax.patches if isinstance(p, Rectangle)]
            # the last route bar (the remainder) ends at the sum of the routes + remainder = the total bar's end
            assert bars[len(ROUTES)].get_x() + bars[len(ROUTES)].get_width() == pytest.approx(total, abs=1e-9)
            assert bars[-1].get_width() == pytest.approx(total)
        assert "remainder" in legend_texts(fig)
        save(fig, tmp_path / f"{model}.png")


def _routes(**shares: float) -> pd.DataFrame:
    fractions = {route: shares.get(route.split()[0], 0.0) for route in (*ROUTES, REMAINDER)}
    return pd.DataFrame({"part": list(fractions), "fraction": list(fractions.values()),
                         "fraction_low": [f - 0.1 for f in fractions.values()]})


@pytest.mark.parametrize(("shares", "total", "expected"), [
    ({"direct": 0.9, "MLPs": 0.1}, (-0.6, -0.4), "acts directly"),
    ({"direct": 2.3, "shared": -1.3}, (-0.5, -0.3), "acts directly; opposed by shared heads -130 %"),
    ({"IOI-only": 0.7, "weak": 0.3}, (0.2, 0.4), "routes through IOI-only heads"),
    ({"MLPs": 0.55, "direct": 0.45}, (0.2, 0.4), "routes through MLPs"),
    ({"anti-only": 0.45, "weak": 0.35, "direct": 0.2}, (-0.5, -0.2), "mixed (anti-only heads 45 %, weak heads 35 %, "
                                                                     "direct 20 %)"),
    ({"direct": 0.3, "remainder": 0.6}, (-0.5, -0.2), "non-additive"),
    ({"direct": 1.0}, (-0.01, 0.03), "no clear effect"),
    ({"direct": 1.0}, (0.01, 0.04), "no clear effect"),
])
def test_verdict_follows_the_documented_rules(shares, total, expected) -> None:
    text, _main, _share = verdict(_routes(**shares), *total, tau=0.05, main_share=0.5, min_share=0.2)
    assert text == expected


def test_a_main_route_with_an_uncertain_share_is_mixed() -> None:
    routes = _routes(direct=0.55, MLPs=0.45)
    routes.loc[routes["part"] == "direct", "fraction_low"] = 0.1
    assert verdict(routes, -0.5, -0.3, tau=0.05, main_share=0.5, min_share=0.2)[0].startswith("mixed")

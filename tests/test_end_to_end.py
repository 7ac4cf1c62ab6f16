"""`kedro run` end to end on the embedded models (small prompt counts): every table, figure and the report,
the numbers of the code before tasks, the notebook, the HTML page in a browser, screening against the
exact run, several tasks and a task of one's own, the toy models and the published protocol.

These run the real CLI in a copy of the project, so they take minutes; the plumbing (resume, the run
lock, settings stamps, a Dask cluster) is tested on tiny models in tests/test_plumbing.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT, copy_project
from nbclient import NotebookClient
from runs import SWEEP, copy_run, jupyter_dirs, kedro, latest, run_in_process
from synthetic import published_format

from ioi_anti.params import Published
from ioi_anti.pipelines.published.nodes import compare_with_published

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project after a full small `kedro run` (its log in run.log)."""
    root = copy_project(tmp_path_factory.mktemp("ioi-anti"))
    done = kedro(root)
    (root / "run.log").write_text(done.stdout + done.stderr)
    return root


GRIDS = {"smollm2-135m": (30, 9), "gemma3-270m": (18, 4)}


def test_a_fresh_run_warns_of_nothing_false_and_ends_naming_its_report(project: Path) -> None:
    """No stale-stamp warning, no deprecation noise from the libraries; the project's logging config is the one
    used; the last lines name report.md and report.html, and both exist."""
    log = (project / "run.log").read_text()
    for noise in ("carries no settings stamp", "register_new_resolver", "KedroDeprecationWarning"):
        assert noise not in log, noise
    assert "conf/logging.yml" in log
    written = re.findall(r"Report(?: \(one page, figures embedded\))? written: (\S+)", log)
    assert [Path(p).name for p in written] == ["report.md", "report.html"], log[-2000:]
    assert all((project / p).is_file() for p in written)


def test_run_writes_every_table_figure_and_the_report(project: Path) -> None:
    per_head = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    assert per_head.groupby("model")["quantisation"].first().to_dict() == {"smollm2-135m": "Q4_1",
                                                                           "gemma3-270m": "Q4_K_M"}
    for model, (n_layers, n_heads) in GRIDS.items():
        rows = per_head[per_head["model"] == model]
        assert len(rows) == n_layers * n_heads == len(rows[["layer", "head"]].drop_duplicates()), model
    assert set(per_head["family"]) == {"llama", "gemma"} and set(per_head["measured_by_ioi"]) == {"exact"}
    assert set(per_head["measured_by_anti"]) == {"exact"}
    for column in ("delta_ioi", "delta_ioi_low", "delta_anti_high", "attr_delta_anti"):
        assert per_head[column].notna().all(), column
    assert (per_head["delta_ioi_low"] <= per_head["delta_ioi"]).all()
    assert (per_head["delta_anti"] <= per_head["delta_anti_high"]).all()
    assert set(per_head["ablation"]) == {"mean"} and set(per_head["n_prompts_ioi"]) == {10}
    baseline = pd.read_parquet(latest(project, "data/07_model_output/baseline.parquet/*/baseline.parquet"))
    assert set(baseline["model"]) == set(GRIDS) and baseline["gap"].gt(0).all()
    for name in ("corr_vs_scale_cross_family", "strong_head_scaling", "all_heads_phase_space", "family_grid",
                 "hero_dose_response", "hero_topk", "hero_paths", "hero_attention"):
        png = latest(project, f"data/08_reporting/{name}.png/*/{name}.png")
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000, name
    for model in GRIDS:
        assert (project / f"data/08_reporting/layer_hists/layer_hist_{model}.png").exists()
    heroes = pd.read_csv(latest(project, "data/08_reporting/hero_heads_for_paper.csv/*/*.csv"))
    routes = pd.read_csv(latest(project, "data/08_reporting/hero_routes.csv/*/*.csv"))
    assert len(routes) == 2 * len(heroes) > 0 and routes["verdict"].notna().all()
    parts = pd.read_parquet(latest(project, "data/07_model_output/hero_decomposition.parquet/*/*.parquet"))
    for (model, hero, task), rows in parts.groupby(["model", "hero", "task"]):
        total = rows.loc[rows["level"] == "total", "delta"].item()
        route = rows[rows["level"] == "route"].set_index("part")["delta"]
        assert route.sum() == pytest.approx(total, abs=1e-6), (model, hero, task)  # the remainder closes the sum
        layer = rows[(rows["level"] == "layer") & (rows["heads"] != "all heads")]
        assert layer["delta"].sum() == pytest.approx(total - route["direct"] - route["remainder"], abs=1e-6)
    hero_models = heroes["model"].unique()
    for model in hero_models:
        assert (project / f"data/08_reporting/hero_decomposition/hero_decomposition_{model}.png").exists()
    interactive = latest(project, "data/08_reporting/all_heads_phase_space_interactive.json/*/*.json").read_text()
    assert '"hovertemplate"' in interactive and "gemma3-270m" in interactive
    report = latest(project, "data/08_reporting/report.md/*/report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    # figures, one layer histogram per model, hero figures, one hero decomposition per model with heroes
    assert len(links) == 4 + len(GRIDS) + 4 + len(hero_models), links
    folder = latest(project, "data/08_reporting/report.md/*/report.md").parent
    for link in links:
        assert (folder / link).resolve().read_bytes()[:4] == b"\x89PNG", link
    for text in ("smollm2-135m", "gemma3-270m", "## Models compared", "## Hero heads", "all_heads_phase_space.png",
                 "mean", "### Where each hero's effect goes", *routes["verdict"]):
        assert text in report, text


def test_the_default_tasks_give_the_per_head_table_of_the_code_before_tasks(project: Path) -> None:
    """IOI and anti-repetition as task modules measure what the two-task code did: the reference table was
    computed by the code before ``ioi_anti.tasks`` (commit 2d7b353) with these small settings."""
    reference = pd.read_parquet(PROJECT / "tests" / "data" / "per_head_small_before_tasks.parquet")
    table = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    table = table.set_index(["model", "layer", "head"]).loc[reference.set_index(["model", "layer", "head"]).index]
    for column in reference.columns.drop(["model", "layer", "head"]):
        np.testing.assert_allclose(table[column].to_numpy(float), reference[column].to_numpy(float), atol=2e-5,
                                   rtol=0, err_msg=column)


def test_example_notebook_runs(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook runs top to bottom in the kernel `kedro jupyter lab` opens it with, on the run's catalog:
    the per-head scatter, the phase space and a hero head's dose-response."""
    for name, folder in jupyter_dirs(tmp_path).items():
        monkeypatch.setenv(name, folder)
    setup = subprocess.run([sys.executable, "-m", "kedro", "jupyter", "setup"], cwd=project, capture_output=True,
                           text=True, env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}, timeout=300)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    notebook = nbformat.read(project / "notebooks" / "explore_per_head.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="kedro_ioi_anti",
                            resources={"metadata": {"path": str(project)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 3, "the notebook draws the per-head scatter, the phase space and a hero's dose-response"


def test_screening_finds_exactly_the_strong_heads_of_the_exact_run(project: Path, tmp_path: Path) -> None:
    """Screening measures exactly, task by task, only the heads that could reach the smallest τ; its strong
    heads at both τ of the run, and their values, are the exact run's."""
    project = copy_run(project, tmp_path / "run")
    exact = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    run_in_process(project, params={"head_ablation": {"mode": "screen"}}, pipelines=["head_ablation"])
    screened = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    assert set(screened["mode"]) == {"screen"}
    keys = ["model", "layer", "head"]
    both = exact.merge(screened, on=keys, suffixes=("", "_screen"))
    for task in ("ioi", "anti"):
        measured = both[f"measured_by_{task}_screen"] == "exact"
        assert 0 < measured.sum() < len(both), task
        for tau in (0.03, 0.05):
            strong = both[f"delta_{task}"].abs() >= tau
            assert measured[strong].all(), (tau, task)
            assert ((both[f"delta_{task}_screen"].abs() >= tau) == strong).all(), (tau, task)
        pd.testing.assert_series_equal(both.loc[measured, f"delta_{task}_screen"], both.loc[measured, f"delta_{task}"],
                                       check_names=False, atol=1e-5, rtol=1e-5)
    only_one_task = (both["measured_by_ioi_screen"] == "exact") != (both["measured_by_anti_screen"] == "exact")
    assert only_one_task.any()  # per-task selection: a head that matters for one task only is measured on it only


POINTS_JS = "return document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length"


def _browser() -> tuple[str, str]:
    """Paths of Chromium and its driver (installed by .ci/run), or a skip naming what is missing."""
    found = {name: shutil.which(name) for name in ("chromium", "chromedriver")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (`apt-get install chromium chromium-driver`, as .ci/run does)")
    return found["chromium"], found["chromedriver"]


def test_html_report_renders_every_figure_and_the_interactive_phase_space(project: Path) -> None:
    """report.html in headless Chromium, offline: every image decodes, no console error, the Plotly
    phase space draws every head and answers a hover with the head's numbers."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    page = latest(project, "data/08_reporting/report.html/*/report.html")
    assert not re.search(r"<(script|img|link|iframe)\b[^>]*\b(src|href)=[\"']?(https?:)?//", page.read_text()), (
        "the page must not need the network")
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(POINTS_JS) > 0)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt])")
        hero_models = pd.read_csv(latest(project, "data/08_reporting/hero_routes.csv/*/*.csv"))["model"].nunique()
        assert len(images) == 4 + len(GRIDS) + 4 + hero_models and all(ok for ok, _ in images), images
        assert driver.execute_script(POINTS_JS) == sum(n_layers * n_heads for n_layers, n_heads in GRIDS.values())
        hover = driver.execute_script(
            "const gd = document.querySelector('.js-plotly-plot');"
            "Plotly.Fx.hover(gd, [{curveNumber: 0, pointNumber: 0}]);"
            "return Array.from(gd.querySelectorAll('.hovertext')).map(e => e.textContent).join(' ');")
        assert re.search(r"L\d+H\d+", hover) and "Δ_IOI" in hover and "category" in hover, hover
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        driver.execute_script("window.scrollTo(0, 0)")
        shot = project / "report_first_screen.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        if os.environ.get("IOI_ANTI_SCREENSHOT"):
            shutil.copy(shot, os.environ["IOI_ANTI_SCREENSHOT"])
    finally:
        driver.quit()


FOUR_TASKS = ["ioi", "anti", "induction", "factual"]
PAIR_OF_TASKS = ("induction", "agreement")
SMALL_TASK = {"n_prompts": 6, "mean_pool_per_template": 1}
SMALL_TASKS = ",".join(f"data_generation.{task}.{key}={value}" for task in FOUR_TASKS
                       for key, value in SMALL_TASK.items())


@pytest.fixture(scope="module")
def tasks_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Gemma-3 alone, six prompts per task: four tasks (given in an environment: `--params` cannot hold a
    list of several) measured up to the per-head table (in this process), then the whole run with a task of the
    user's own added (examples/ on PYTHONPATH) and categorised on the pair induction and that task; the second
    run's log."""
    root = copy_project(tmp_path_factory.mktemp("tasks"))
    env = root / "conf" / "tasks"
    env.mkdir()
    (env / "parameters.yml").write_text(yaml.safe_dump({"models": ["gemma3-270m"], "tasks": FOUR_TASKS}))
    run_in_process(root, "tasks", {"data_generation": dict.fromkeys(FOUR_TASKS, SMALL_TASK)}, to_outputs=["per_head"])
    (env / "parameters.yml").write_text(yaml.safe_dump({"models": ["gemma3-270m"],
                                                        "tasks": [*FOUR_TASKS, "agreement_task:agreement"],
                                                        "categorisation": {"pair": list(PAIR_OF_TASKS)}}))
    second = kedro(root, "--env", "tasks", params=SMALL_TASKS)
    return root, second.stdout + second.stderr


def test_a_run_of_five_tasks_has_every_tasks_delta_gap_and_roles(tasks_project: tuple[Path, str]) -> None:
    root, _log = tasks_project
    tasks = [*FOUR_TASKS, "agreement"]
    per_head = pd.read_parquet(latest(root, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    assert len(per_head) == 18 * 4
    for task in tasks:
        delta = per_head[[f"delta_{task}", f"delta_{task}_low", f"delta_{task}_high"]].to_numpy()
        assert np.isfinite(delta).all() and (delta[:, 1] <= delta[:, 0]).all() and (delta[:, 0] <= delta[:, 2]).all()
    assert per_head["induction_score"].between(0, 1).all() and per_head["induction_score"].max() > 0.2
    baseline = pd.read_parquet(latest(root, "data/07_model_output/baseline.parquet/*/baseline.parquet"))
    assert baseline["task"].tolist() == tasks and baseline["gap_ok"].all() and (baseline["gap_low"] > 0).all()
    correlations = pd.read_parquet(latest(root, "data/07_model_output/task_correlations.parquet/*/*.parquet"))
    assert len(correlations) == 10
    report = latest(root, "data/08_reporting/report.md/*/report.md").read_text()
    section = report.split("## Roles over all tasks")[1].split("\n## ")[0]
    assert "This run measured 5 tasks (ioi, anti, induction, factual, agreement)" in section
    assert "task_roles.png" in section and "| gemma3-270m (Q4_K_M) | agreement vs" not in section
    assert "| gemma3-270m (Q4_K_M) | induction vs agreement |" in section
    assert "| gemma3-270m (Q4_K_M) | factual |" in report.split("## Baseline")[1].split("\n## ")[0]


def test_categories_heroes_and_report_follow_the_runs_pair_of_tasks(tasks_project: tuple[Path, str]) -> None:
    """`categorisation.pair: [induction, agreement]` (a task of the user's own): categories, correlations, hero
    heads and their studies, routes and the report are those of that pair, and the interactive phase space
    can switch to every other pair."""
    root, _log = tasks_project
    read = lambda pattern: pd.read_parquet(latest(root, pattern))  # noqa: E731
    heads = read("data/07_model_output/head_categories.parquet/*/*.parquet")
    categories = {"induction-only", "agreement-only", "shared", "weak"}
    assert set(heads["category"]) <= categories and "induction-only" in set(heads["category"])
    rows = heads[heads["is_default_tau"]]
    strong = rows[["strong_induction", "strong_agreement"]].to_numpy()
    expected = np.select([strong.all(1), strong[:, 0], strong[:, 1]], ["shared", "induction-only", "agreement-only"],
                         "weak")
    assert (rows["category"].to_numpy() == expected).all()
    correlations = read("data/07_model_output/correlations.parquet/*/*.parquet")
    pairs = read("data/07_model_output/task_correlations.parquet/*/*.parquet").set_index(["task_x", "task_y"])
    assert (correlations["task_x"].iloc[0], correlations["task_y"].iloc[0]) == PAIR_OF_TASKS
    assert correlations["pearson"].iloc[0] == pytest.approx(pairs.loc[PAIR_OF_TASKS, "pearson"], abs=1e-12)
    heroes = pd.read_csv(latest(root, "data/08_reporting/hero_heads_for_paper.csv/*/*.csv"))
    assert len(heroes) and set(heroes["category"]) <= categories - {"weak"}
    dose = read("data/07_model_output/hero_dose_response.parquet/*/*.parquet")
    assert set(dose["task"]) == set(PAIR_OF_TASKS)
    attention = read("data/07_model_output/hero_attention.parquet/*/*.parquet")
    assert set(attention["task"]) == {"induction"}, "agreement names no attention targets"
    routes = pd.read_csv(latest(root, "data/08_reporting/hero_routes.csv/*/*.csv"))
    assert {"induction-only heads", "agreement-only heads"} <= set(routes.columns)
    report = latest(root, "data/08_reporting/report.md/*/report.md").read_text()
    assert report.startswith("# induction and subject-verb agreement: per-head ablation report")
    assert "## Correlation of Δ_induction and Δ_agreement" in report
    page = latest(root, "data/08_reporting/report.html/*/report.html").read_text()
    assert page.count("subject-verb agreement vs") + page.count("vs subject-verb agreement") >= 4


def test_adding_a_task_to_a_finished_run_measures_only_that_task(tasks_project: tuple[Path, str]) -> None:
    _root, log = tasks_project
    for task in FOUR_TASKS:
        assert f"Baseline of gemma3-270m on {task} already measured" in log, task
        assert f"gemma3-270m, {task}: every head already measured" in log, task
    assert "Baseline of gemma3-270m on agreement already measured" not in log
    assert "gemma3-270m, agreement: every head already measured" not in log


TOY_GRID = {"toy_models": {"grid": {"mixes": [0.0, 1.0], "seeds": [0], "sizes": [
    {"name": "small", "n_layer": 2, "n_head": 4, "n_embd": 64}]}, "training": {"steps": 1200},
    "prompts": {"n_prompts": 16}, "measure": {"n_boot": 200}}}


def test_the_toy_models_pipeline_trains_measures_reports_and_resumes(project: Path, tmp_path: Path) -> None:
    """A grid of two toy models end to end; then one model's file damaged and the other's kept: the re-run
    trains only the damaged one. Then the quantisation pipeline on them and on the finished run's SmolLM2
    (`quantisation.models`: Gemma-3 is left out, and its heads in per_head are not marked)."""
    root = copy_run(project, tmp_path / "toy")
    env = root / "conf" / "toy"
    env.mkdir()
    (env / "parameters.yml").write_text(yaml.safe_dump(TOY_GRID))
    first = kedro(root, "--pipelines", "toy_models", "--env", "toy")
    log = first.stdout + first.stderr
    assert all(f"Training 1 toy model(s) of size small at λ = {mix} together" in log for mix in (0, 1))
    assert len(re.findall(r"Toy model toy-small-mix[01]\.00-seed0 (converged|did not converge) at step", log)) == 2
    models = sorted((root / "data/06_models/toy_models").glob("*/*.pkl"))
    assert [m.stem for m in models] == ["toy-small-mix0.00-seed0", "toy-small-mix1.00-seed0"]
    per_head = pd.read_parquet(latest(root, "data/07_model_output/toy_per_head.parquet/*/*.parquet"))
    assert len(per_head) == 2 * 8 and {"delta_toy_ioi", "delta_toy_anti"} <= set(per_head.columns)
    accuracy = pd.read_parquet(latest(root, "data/07_model_output/toy_accuracy.parquet/*/*.parquet"))
    by = accuracy.set_index(["mix", "kind"])["accuracy"]
    assert by[(1.0, "ioi")] >= 0.9 and by[(0.0, "list")] >= 0.9 and by[(0.0, "copy")] >= 0.9
    assert (accuracy["steps"] < 1200).all(), "both stop early"
    roles = pd.read_parquet(latest(root, "data/07_model_output/toy_model_roles.parquet/*/*.parquet"))
    assert not roles["falls_short"].any() and roles["pearson"].isna().all(), "each learned one task only"
    report = latest(root, "data/08_reporting/toy_report.md/*/toy_report.md").read_text()
    assert report.startswith("# Toy models") and "## The answer" in report and "toy_roles.png" in report
    for figure in ("toy_roles", "toy_phase_space", "toy_training"):
        assert latest(root, f"data/08_reporting/{figure}.png/*/{figure}.png").stat().st_size > 10_000
    models[0].write_bytes(models[0].read_bytes()[:1000])
    second = kedro(root, "--pipelines", "toy_models", "--env", "toy")
    log = second.stdout + second.stderr
    assert "toy-small-mix0.00-seed0 is damaged" in log and "1 of 2 already trained" in log
    assert "Training 1 toy model(s) of size small at λ = 0 together" in log and log.count("Toy model toy-small") == 1
    _the_quantisation_pipeline_measures_toy_models_and_the_runs_model_and_resumes(root)


def _the_quantisation_pipeline_measures_toy_models_and_the_runs_model_and_resumes(root: Path) -> None:
    settings = yaml.safe_load((root / "conf/toy/parameters.yml").read_text())
    settings |= {"quantisation": {"toy_types": ["Q8_0", "Q4_0"], "requantise_to": "Q4_0", "models": ["smollm2-135m"]}}
    (root / "conf/toy/parameters.yml").write_text(yaml.safe_dump(settings))
    kedro(root, "--pipelines", "quantisation", "--env", "toy")
    effects = pd.read_parquet(latest(root, "data/07_model_output/toy_quant_effects.parquet/*/*.parquet"))
    by_type = effects.groupby("quantised_to")
    assert sorted(by_type.groups) == ["Q4_0", "Q8_0"] and (by_type.size() == 2).all()
    q8, q4 = (effects[effects["quantised_to"] == kind] for kind in ("Q8_0", "Q4_0"))
    learned = q8[["pearson_toy_ioi", "pearson_toy_anti"]].max(axis=1)  # each model's one learned task (else NaN)
    assert (q8["n_changed_settled"] == 0).all() and (learned > 0.999).all()
    assert q4["max_abs_change_toy_anti"].max() > 3 * q8["max_abs_change_toy_anti"].max(), "Q4_0 moves Δ more"
    heads = pd.read_parquet(latest(root, "data/07_model_output/quant_heads.parquet/*/*.parquet"))
    assert heads.groupby("model").size().to_dict() == {"smollm2-135m": 30 * 9}, "quantisation.models: SmolLM2 only"
    assert heads["quant_sensitive"].dtype == bool
    tensors = pd.read_parquet(latest(root, "data/07_model_output/quant_tensors.parquet/*/*.parquet"))
    ratio = tensors["rel_change"] / tensors["fresh_rel_change"]
    assert tensors.groupby("model").size().to_dict() == {"smollm2-135m": 30 * 7 + 1}
    assert 0.5 < ratio.median() < 2, "a perturbation of a fresh 4-bit quantisation's size"
    report = latest(root, "data/08_reporting/quantisation_report.md/*/quantisation_report.md").read_text()
    assert report.startswith("# Quantised weights") and "## Verdict" in report and "smollm2-135m (Q4_1)" in report
    assert "every head is measured again exactly" in report
    assert "- Toy models in Q8_0: 0 of 16 heads clear of τ change category" in report
    # resumed (nothing left to measure), and per_head re-tabulated from the saved sweeps, in one run
    again = kedro(root, "--pipelines", "head_ablation,quantisation", "--env", "toy", "--to-outputs",
                  "requantised_sweeps,per_head")
    assert "smollm2-135m re-quantised: already measured" in again.stdout + again.stderr
    per_head = pd.read_parquet(latest(root, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    marked = per_head.merge(heads[["model", "layer", "head", "quant_sensitive"]], on=["model", "layer", "head"])
    assert len(marked) == 30 * 9 and marked["quant_sensitive_x"].notna().all()
    assert (marked["quant_sensitive_x"].astype(bool) == marked["quant_sensitive_y"]).all()
    assert per_head.loc[per_head["model"] == "gemma3-270m", "quant_sensitive"].isna().all(), "not measured: missing"


PAPER_PROTOCOL = {"models": ["smollm2-135m"],
                  "data_generation": {task: {"n_prompts": 6, "mean_pool_per_template": 1}
                                      for task in ("paper_ioi", "paper_anti")}}


def test_the_published_protocol_runs_offline_as_a_task_pair(tmp_path: Path) -> None:
    """`--env paper_protocol` on SmolLM2: the published prompt forms as tasks, zero ablation, Δ the raw mean
    change of the logit difference (the sweep's own per-prompt effects, not divided by the gap), τ on raw
    values; the report states the protocol, and the published tables' audit is in it."""
    root = copy_project(tmp_path / "paper_protocol")
    run_in_process(root, "paper_protocol", PAPER_PROTOCOL)  # in this process: SmolLM2 is loaded once
    per_head = pd.read_parquet(latest(root, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    assert len(per_head) == 30 * 9 and set(per_head["ablation"]) == {"zero"} and set(per_head["delta_unit"]) == {"raw"}
    effects = pd.concat(pd.read_parquet(p) for p in (root / SWEEP).glob("*/layer_*.parquet"))
    for task in ("paper_ioi", "paper_anti"):
        exact = effects[(effects["task"] == task) & (effects["method"] == "exact")]
        mean = exact.groupby(["layer", "head"])["effect"].mean()
        np.testing.assert_allclose(per_head.set_index(["layer", "head"]).loc[mean.index, f"delta_{task}"], mean,
                                   rtol=1e-6, atol=1e-9)
        assert (per_head[f"gap_{task}"] != 1.0).all(), "the gap is still measured and reported"
    prompts = pd.read_parquet(latest(root, "data/03_primary/prompts.parquet/*/prompts.parquet"))
    clean = prompts[prompts["role"] == "clean"].groupby("task")["text"].first()
    assert clean["paper_ioi"].startswith("When ") and clean["paper_ioi"].endswith(" gave a gift to")
    assert clean["paper_anti"].startswith(" ") and " met " in clean["paper_anti"]
    report = latest(root, "data/08_reporting/report.md/*/report.md").read_text()
    assert "- Δ: the mean change of the task metric in logits (raw" in report and "- Ablation: zero" in report
    assert "## The published tables, audited" in report and "No model of this run is one the study published" in report
    shortcut = pd.read_parquet(latest(root, "data/07_model_output/published_comparison.parquet/*/*.parquet"))
    assert shortcut["model"].tolist() == ["smollm2-135m"] and shortcut["top_k"].tolist() == [20]
    assert f"| smollm2-135m (Q4_1) | {shortcut['r'].iloc[0]:.3f} [" in report
    # the run's own heads in the published format (the published top-k join): the side by side agrees
    # exactly; with one published column shuffled, it shows the disagreement
    correlations = pd.read_parquet(latest(root, "data/07_model_output/correlations.parquet/*/*.parquet"))
    x, y = "delta_paper_ioi", "delta_paper_anti"
    made = published_format(per_head, 20, x=x, y=y)
    head_categories = pd.read_parquet(latest(root, "data/07_model_output/head_categories.parquet/*/*.parquet"))
    names = Published(top_k=20, tau=0.05, names={"smollm2-135m": "smollm2-135m"})
    compare = lambda tables: compare_with_published(  # noqa: E731
        head_categories, correlations, tables["per_head"], tables["correlations"], tables["categories"],
        tables["heroes"], ["paper_ioi", "paper_anti"], ["paper_ioi", "paper_anti"], names)
    (models, heroes) = compare(made)
    assert models["listed_pearson_x"].iloc[0] == pytest.approx(1.0) == models["listed_pearson_y"].iloc[0]
    assert models["r_top_k_zero_fill"].iloc[0] == pytest.approx(models["r_published"].iloc[0], abs=1e-12)
    assert heroes["delta_x"].tolist() == pytest.approx(heroes["published_delta_x"].tolist())
    made["per_head"]["delta_ioi"] = np.random.default_rng(0).permutation(made["per_head"]["delta_ioi"].to_numpy())
    (models, _) = compare(made)
    assert models["listed_pearson_x"].iloc[0] < 0.9 and models["listed_pearson_y"].iloc[0] == pytest.approx(1.0)
    audit = pd.read_parquet(latest(root, "data/07_model_output/published_audit.parquet/*/*.parquet"))
    published = pd.read_csv(root / "data/01_raw/published/joint_ioi_anti_repeat_all.csv")
    assert set(published["model"]) <= set(audit["model"]) and "impossible_heads" in set(audit["check"])

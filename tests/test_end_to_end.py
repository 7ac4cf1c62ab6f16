"""`kedro run` end to end on the embedded model (small prompt counts), the notebook, and resume.

These run the real CLI in a copy of the project, so they take a few minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import PROJECT
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

SMALL = ",".join([
    "data_generation.ioi.n_prompts=10", "data_generation.ioi.mean_pool_per_template=1",
    "data_generation.anti.n_prompts=9", "data_generation.anti.mean_pool_per_template=1",
    "baseline.n_boot=200", "head_ablation.n_boot=200", "categorisation.n_boot=200", "hero_heads.n_boot=200",
    "hero_heads.max_prompts=4", "hero_heads.topk_max=2", "hero_heads.max_receivers=2", "hero_heads.dose_steps=3",
])
SWEEP = "data/07_model_output/head_effects_per_prompt"


def kedro(root: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run the kedro CLI in ``root`` with the small settings."""
    cmd = [sys.executable, "-m", "kedro", "run", "--params", SMALL, *args]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1", "COLUMNS": "400"}  # one log line each
    if not wait:
        return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def latest(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[-1]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project (conf, notebooks, empty data) after a full small `kedro run`."""
    root = tmp_path_factory.mktemp("ioi-anti")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "notebooks", root / "notebooks")
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    kedro(root)
    return root


def test_run_writes_every_table_figure_and_the_report(project: Path) -> None:
    per_head = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    assert len(per_head) == 30 * 9 and per_head[["layer", "head"]].drop_duplicates().shape[0] == 270
    for column in ("delta_ioi", "delta_ioi_low", "delta_anti_high", "attr_delta_anti"):
        assert per_head[column].notna().all(), column
    assert (per_head["delta_ioi_low"] <= per_head["delta_ioi"]).all()
    assert (per_head["delta_anti"] <= per_head["delta_anti_high"]).all()
    assert set(per_head["ablation"]) == {"mean"} and set(per_head["n_prompts_ioi"]) == {10}
    baseline = pd.read_parquet(latest(project, "data/07_model_output/baseline.parquet/*/baseline.parquet"))
    assert baseline.set_index("task")["gap"].gt(0).all()
    for name in ("corr_vs_scale_cross_family", "strong_head_scaling", "all_heads_phase_space", "family_grid",
                 "hero_dose_response", "hero_topk", "hero_paths", "hero_attention"):
        png = latest(project, f"data/08_reporting/{name}.png/*/{name}.png")
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000, name
    assert (project / "data/08_reporting/layer_hists/layer_hist_smollm2-135m.png").exists()
    assert latest(project, "data/08_reporting/hero_heads_for_paper.csv/*/*.csv").exists()
    report = latest(project, "data/08_reporting/report.md/*/report.md").read_text()
    for text in ("smollm2-135m", "## Hero heads", "all_heads_phase_space.png", "mean"):
        assert text in report, text


def test_example_notebook_runs(project: Path) -> None:
    notebook = nbformat.read(project / "notebooks" / "explore_per_head.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(project)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook draws a figure"


def test_interrupted_sweep_resumes_without_redoing_finished_layers(project: Path) -> None:
    before = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    sweep = next((project / SWEEP).iterdir())
    shutil.rmtree(sweep)
    run = kedro(project, "--pipeline", "head_ablation", wait=False)
    try:
        deadline = time.monotonic() + 900
        while len(list(sweep.glob("layer_*.parquet"))) < 3:
            assert run.poll() is None, run.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the sweep saved no layers"
            time.sleep(1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in sweep.glob("*.parquet")}
    assert 3 <= len(kept) < 31, "the run was interrupted part way"
    done = kedro(project, "--pipeline", "head_ablation")
    assert f"resuming the sweep, {31 - len(kept)} of 31 jobs left" in done.stdout + done.stderr
    for name, mtime in kept.items():
        assert (sweep / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    assert len(list(sweep.glob("*.parquet"))) == 31
    after = pd.read_parquet(latest(project, "data/07_model_output/per_head.parquet/*/per_head.parquet"))
    pd.testing.assert_frame_equal(before, after, check_exact=False, atol=1e-5, rtol=1e-5)

    again = kedro(project, "--pipeline", "head_ablation")
    assert "every head already measured" in again.stdout + again.stderr

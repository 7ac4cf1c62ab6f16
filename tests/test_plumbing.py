"""The plumbing of a `kedro run` on tiny random models: resume after a kill, damaged partitions, the run
lock, settings stamps, a local Dask cluster with a worker killed mid-sweep.

None of these depends on what a model has learned, so they run on two tiny random models (GPT-2 and
Llama shapes, SmolLM2's tokenizer) saved in a Hub-layout cache and loaded offline, which load and run in
milliseconds; the realism of the numbers is the embedded-model runs' job (tests/test_end_to_end.py).
One small run is made once per module; every test that changes a run works on its own copy of it. Δ is
raw (logits): random models have no task gap to divide by. A run that must be interrupted part way
replays one prompt and head at a time (``runtime.max_rows=1``): batch sizes change no number and no
partition key, so the run after it, at the usual sizes, finds and keeps what it saved.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from base_params import settings
from conftest import copy_project
from runs import SWEEP, copy_run, kedro, latest, offline_env, save_hub_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ioi_anti.execution import usable_cores
from ioi_anti.measure.sweep import ModelSweep
from ioi_anti.models.loading import LoadedModel, wrap_model
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import Registry
from ioi_anti.tasks import PAIR

pytestmark = pytest.mark.e2e

# model id -> (family, Hub name, shape): a deep, wide-headed GPT-2 whose sweep can be interrupted part
# way, and a small Llama (grouped KV heads, no BOS) for a second family's code path.
TINY = {"tiny-gpt2": ("gpt2", "test-org/tiny-gpt2", {"n_layers": 8, "n_heads": 16, "hidden": 64}),
        "tiny-llama": ("llama", "test-org/tiny-llama", {"n_layers": 3, "n_heads": 4, "hidden": 32})}
GRIDS = {model: (shape["n_layers"], shape["n_heads"]) for model, (_f, _h, shape) in TINY.items()}
RAW = "head_ablation.delta=raw"
SLOW = f"{RAW},runtime.max_rows=1,runtime.max_batch=1"  # one prompt and head per replay: a sweep long enough to kill
CLUSTER = "runtime.cluster=local,runtime.workers=2"
# torch threads of each worker of a two-worker local cluster: CPU results depend in their last bits on
# torch's thread count (the reduction order of its kernels), so bit-for-bit references use the same.
WORKER_THREADS = max(1, usable_cores() // 2)


@dataclass(frozen=True)
class TinyRun:
    """A finished small run on the tiny models, and the Hub cache its models load from."""

    root: Path
    cache: Path
    log: str  # the run's output

    @property
    def env(self) -> dict[str, str]:
        return offline_env(self.cache)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer) -> TinyRun:
    cache = tmp_path_factory.mktemp("tiny-hub")
    for seed, (family, hf_name, shape) in enumerate(TINY.values()):
        save_hub_model(cache, hf_name, "main", family, smol_tokenizer, seed, **shape)
    root = copy_project(tmp_path_factory.mktemp("tiny-run"))
    registry = {model: {"family": family, "source": "hub", "hf_name": hf_name, "prepend_bos": False,
                        "quantisation": "none", "licence": "random weights"}
                for model, (family, hf_name, _shape) in TINY.items()}
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump({"models": list(TINY),
                                                                          "model_registry": registry}))
    done = kedro(root, params=RAW, env=offline_env(cache))
    return TinyRun(root, cache, done.stdout + done.stderr)


def test_a_run_ends_by_saying_where_its_report_is(tiny_run: TinyRun) -> None:
    last_lines = "\n".join(tiny_run.log.strip().splitlines()[-12:])
    for name in ("report.md", "report.html"):
        written = latest(tiny_run.root, f"data/08_reporting/{name}/*/{name}").relative_to(tiny_run.root)
        assert f"written: {written}" in last_lines, last_lines


def _per_head(root: Path) -> pd.DataFrame:
    return pd.read_parquet(latest(root, "data/07_model_output/per_head.parquet/*/per_head.parquet"))


def _wait_for_layers(run: subprocess.Popen, folder: Path, pattern: str, count: int) -> None:
    """Wait until ``count`` files under ``folder`` match ``pattern``, while ``run`` lives."""
    deadline = time.monotonic() + 600
    while len(list(folder.glob(pattern))) < count:
        assert run.poll() is None, run.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the sweep saved no layers"
        time.sleep(0.05)


def test_interrupted_sweep_resumes_without_redoing_finished_layers(tiny_run: TinyRun, tmp_path: Path) -> None:
    root = copy_run(tiny_run.root, tmp_path / "run")
    before = _per_head(root)
    sweep = next(p for p in (root / SWEEP).iterdir() if p.name.startswith("tiny-gpt2__ioi__"))
    jobs = GRIDS["tiny-gpt2"][0] + 1  # the attribution and one job per layer
    shutil.rmtree(sweep)
    run = kedro(root, "--pipelines", "head_ablation", wait=False, params=SLOW, env=tiny_run.env)
    try:
        _wait_for_layers(run, sweep, "layer_*.parquet", 3)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in sweep.glob("*.parquet")}
    assert 3 <= len(kept) < jobs, "the run was interrupted part way"
    for name in kept:  # killed at any moment, a partition is whole or absent (written, then renamed)
        pd.read_parquet(sweep / name)
    done = kedro(root, "--pipelines", "head_ablation", params=RAW, env=tiny_run.env)
    assert f"resuming the sweep, {jobs - len(kept)} of {jobs} jobs left" in done.stdout + done.stderr
    for name, mtime in kept.items():
        assert (sweep / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    assert len(list(sweep.glob("*.parquet"))) == jobs
    pd.testing.assert_frame_equal(before, _per_head(root), check_exact=False, atol=1e-5, rtol=1e-5)

    # A truncated file (as a full disk leaves with a plain writer) and a readable one with rows missing
    # are detected, named and recomputed; the table comes out the same; the other layers are kept.
    truncated, short = sweep / "layer_005.parquet", sweep / "layer_006.parquet"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    pd.read_parquet(short).iloc[::2].to_parquet(short)
    (sweep / "layer_007.parquet.partial-99999").write_bytes(b"half")
    kept = {p.name: p.stat().st_mtime_ns for p in sweep.glob("*.parquet") if p not in (truncated, short)}
    mended = kedro(root, "--pipelines", "head_ablation", params=RAW, env=tiny_run.env)
    log = mended.stdout + mended.stderr
    assert re.search(r"layer_005 is damaged \(unreadable", log) and "layer_006 is damaged" in log, log[-3000:]
    assert f"resuming the sweep, 2 of {jobs} jobs left" in log and "layer_007.parquet.partial-99999" in log
    assert not list(sweep.glob("*.partial-*"))
    for name, mtime in kept.items():
        assert (sweep / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    pd.testing.assert_frame_equal(before, _per_head(root), check_exact=False, atol=1e-5, rtol=1e-5)


def test_a_step_refuses_results_computed_with_other_settings(tiny_run: TinyRun, tmp_path: Path) -> None:
    """A table saved under one setting and read under another stops the step, naming the difference and
    the command that fixes it, before anything is written; re-running that step mends it."""
    root = copy_run(tiny_run.root, tmp_path / "run")
    kedro(root, "--pipelines", "head_ablation", params=f"{RAW},head_ablation.n_boot=100", env=tiny_run.env)
    refused = kedro(root, "--pipelines", "categorisation", params=RAW, env=tiny_run.env, check=False)
    log = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "SettingsMismatchError" in log, log[-3000:]
    assert "head_ablation.n_boot: 100 there, 200 now" in log and "kedro run --pipelines head_ablation" in log
    assert not (root / "data" / ".run.lock").exists(), "a failed run releases the lock"
    kedro(root, "--pipelines", "head_ablation", params=RAW, env=tiny_run.env)
    kedro(root, "--pipelines", "categorisation", params=RAW, env=tiny_run.env)


def test_a_second_run_of_the_project_is_refused_while_one_is_running(tiny_run: TinyRun, tmp_path: Path) -> None:
    root = copy_run(tiny_run.root, tmp_path / "run")
    lock = root / "data" / ".run.lock"
    shutil.rmtree(root / SWEEP)  # the first run sweeps every head again, one at a time: long enough to overlap
    first = kedro(root, "--pipelines", "head_ablation", wait=False, params=SLOW, env=tiny_run.env)
    try:
        deadline = time.monotonic() + 120
        while not lock.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run took no lock"
            time.sleep(0.2)
        second = kedro(root, "--pipelines", "reporting", params=RAW, env=tiny_run.env, check=False)
        assert first.poll() is None, "the first run should still be sweeping"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0 and "Another run is writing this project's data/" in second.stdout + second.stderr
    assert lock.exists(), "a killed run leaves its lock behind"
    resumed = kedro(root, "--pipelines", "data_generation", params=RAW, env=tiny_run.env)
    assert "Taking over" in resumed.stdout + resumed.stderr and not lock.exists()


@dataclass
class ClusterRun:
    """A small run on a local Dask cluster of two worker processes, one of them killed mid-sweep."""

    root: Path
    log: str  # the killed run's output
    returncode: int
    saved_at_kill: int  # sweep partitions on disk when the worker was killed
    rerun_log: str


@pytest.fixture(scope="module")
def cluster_run(tiny_run: TinyRun, tmp_path_factory: pytest.TempPathFactory) -> ClusterRun:
    """Both models' baselines and head sweeps on a local Dask cluster, from the in-process run's prompts,
    one prompt and head per replay; once three layers are saved, one worker process is killed (SIGKILL);
    then the same command again. (Hero studies run on the workers the same way; they are left out.)"""
    root = copy_project(tmp_path_factory.mktemp("tiny-cluster"))
    (root / "conf" / "local" / "parameters.yml").write_text((tiny_run.root / "conf/local/parameters.yml").read_text())
    for folder in ("data/03_primary", "data/05_model_input", "data/.settings"):
        shutil.copytree(tiny_run.root / folder, root / folder)
    nodes = ("--from-nodes", "measure_baselines", "--to-nodes", "summarise_heads")
    run = kedro(root, *nodes, wait=False, params=f"{SLOW},{CLUSTER}", env=tiny_run.env)
    try:
        _wait_for_layers(run, root / SWEEP, "*/layer_*.parquet", 3)
        workers = _dask_workers(run.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        saved = len(list((root / SWEEP).glob("*/*.parquet")))
        log = run.communicate(timeout=900)[0]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    rerun = kedro(root, *nodes, params=f"{SLOW},{CLUSTER}", env=tiny_run.env)
    return ClusterRun(root, log, run.returncode, saved, rerun.stdout + rerun.stderr)


def _dask_workers(pid: int) -> list[int]:
    """The worker processes a local cluster started under the kedro process ``pid``."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            workers.append(int(stat.parent.name))
    return workers


def _load_tiny(tiny_run: TinyRun, model_id: str) -> LoadedModel:
    """A tiny model of the run, loaded in this process from its snapshot in the Hub cache (this process
    reads no Hub cache of its own), wrapped by the project's loader."""
    registry = Registry.model_validate(yaml.safe_load((tiny_run.root / "conf/local/parameters.yml").read_text())
                                       ["model_registry"])
    spec = ModelSpec.from_registry(model_id, registry)
    snapshot = next((tiny_run.cache / ("models--" + spec.hf_name.replace("/", "--")) / "snapshots").iterdir())
    hf_model = AutoModelForCausalLM.from_pretrained(snapshot, dtype=torch.float32, attn_implementation="eager")
    return wrap_model(spec, hf_model, AutoTokenizer.from_pretrained(snapshot), torch.device("cpu"), "float32")


def test_a_local_dask_cluster_writes_the_in_process_numbers(tiny_run: TinyRun, cluster_run: ClusterRun) -> None:
    """Both models' baselines and sweeps on two worker processes (one killed on the way): the same
    partitions as in process, bit for bit at the workers' torch thread count; the per-head table within
    float32 rounding of the in-process run's (default thread count)."""
    project, root = tiny_run.root, cluster_run.root
    assert "Dask cluster: 2 workers" in cluster_run.log, cluster_run.log[-3000:]
    for folder in (SWEEP, "data/07_model_output/baseline_per_prompt"):
        here = sorted(p.relative_to(project) for p in (project / folder).rglob("*.parquet"))
        there = sorted(p.relative_to(root) for p in (root / folder).rglob("*.parquet"))
        # per model and task: layers + attribution, or the baseline
        expected = len(PAIR) * (sum(n + 1 for n, _ in GRIDS.values()) if folder == SWEEP else len(GRIDS))
        assert here == there and len(here) == expected, folder
    for table in ("per_head", "attribution_agreement"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(latest(root, f"data/07_model_output/{table}.parquet/*/{table}.parquet")),
            pd.read_parquet(latest(project, f"data/07_model_output/{table}.parquet/*/{table}.parquet")),
            check_exact=False, atol=1e-4, rtol=1e-4, obj=table)
    runtime = settings(runtime__device="cpu", runtime__max_rows=1, runtime__max_batch=1).runtime
    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    try:
        for model_id, parts in (("tiny-gpt2", ("attribution", "layer_000", "layer_007")),
                                ("tiny-llama", ("layer_001", "layer_002"))):
            lm = _load_tiny(tiny_run, model_id)
            tokens = pd.read_parquet(root / "data/05_model_input/tokenised_prompts" / f"{model_id}.parquet")
            for task in PAIR:
                folder = next((root / SWEEP).glob(f"{model_id}__{task}__*"))
                sweep = ModelSweep(lm.spec, tokens[tokens["task"] == task], runtime, "mean", 0, lm=lm)
                for part in parts:
                    pd.testing.assert_frame_equal(pd.read_parquet(folder / f"{part}.parquet"),
                                                  sweep.job(f"{folder.name}/{part}"), check_exact=True,
                                                  check_dtype=False, obj=f"{model_id} {task} {part}")
    finally:
        torch.set_num_threads(threads)


def test_a_worker_killed_mid_sweep_costs_only_its_unfinished_layers(cluster_run: ClusterRun) -> None:
    """The scheduler moves a killed worker's jobs and the run finishes (or stops naming the model, and the
    same command finishes it); nothing finished is redone."""
    total = len(PAIR) * sum(n + 1 for n, _ in GRIDS.values())
    assert 3 <= cluster_run.saved_at_kill < total, "the worker was killed part way through the sweep"
    if cluster_run.returncode:
        assert "re-run the same command" in cluster_run.log, cluster_run.log[-3000:]
        assert "resuming the sweep" in cluster_run.rerun_log
    else:
        assert "head sweep done (2 of 2 models)" in cluster_run.log, cluster_run.log[-3000:]
        assert "every head already measured" in cluster_run.rerun_log, cluster_run.rerun_log[-3000:]

"""Running the kedro CLI in a copy of the project, on the embedded models or on tiny offline Hub models.

Shared by the end-to-end tests (tests/test_end_to_end.py: the realism of the numbers, on the embedded
models) and the plumbing tests (tests/test_plumbing.py: resume, the run lock, settings stamps, a Dask
cluster, on tiny random models in a Hub-layout cache, which load and run in milliseconds).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from conftest import PROJECT
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from tiny_models import tiny_config
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

SMALL = ",".join([
    "data_generation.ioi.n_prompts=10", "data_generation.ioi.mean_pool_per_template=1",
    "data_generation.anti.n_prompts=9", "data_generation.anti.mean_pool_per_template=1",
    "baseline.n_boot=200", "head_ablation.n_boot=200", "categorisation.n_boot=200", "hero_heads.n_boot=200",
    "hero_heads.max_prompts=4", "hero_heads.topk_max=2", "hero_heads.max_receivers=2", "hero_heads.dose_steps=3",
])
SWEEP = "data/07_model_output/head_effects_per_prompt"


def kedro(root: Path, *args: str, wait: bool = True, params: str = "", env: Mapping[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run ``kedro run`` in ``root`` with the small settings (plus ``params`` and the environment ``env``);
    with ``wait``, fail on a non-zero exit unless ``check`` is False."""
    cmd = [sys.executable, "-m", "kedro", "run", "--params", ",".join(filter(None, [SMALL, params])), *args]
    full_env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1", "COLUMNS": "400",  # one line each
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT / "examples"), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    done = subprocess.run(cmd, cwd=root, env=full_env, capture_output=True, text=True, timeout=1200)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def jupyter_dirs(root: Path) -> dict[str, str]:
    """Jupyter's data, runtime and config folders under ``root``, so a test installs no kernel in the user's."""
    return {f"JUPYTER_{kind}_DIR": str(root / kind.lower()) for kind in ("DATA", "RUNTIME", "CONFIG")}


def run_in_process(root: Path, env: str | None = None, params: Mapping[str, Any] | None = None,
                   pipelines: list[str] | None = None, to_outputs: list[str] | None = None) -> None:
    """``kedro run --env <env> [--pipelines ...] [--to-outputs ...]`` of the project copy ``root`` in this process,
    through ``KedroSession``: for a run whose log no test reads, it saves the CLI's start (importing torch,
    transformers and Kedro again) and shares the models this process has loaded (the model cache). The small
    settings apply, then ``params`` (nested as ``--params`` nests dotted keys; a group given here is merged
    into theirs)."""
    runtime: dict[str, Any] = {}
    for setting in SMALL.split(","):  # the small settings, as kedro() gives them
        dotted, value = setting.split("=")
        *path, last = dotted.split(".")
        target = runtime
        for part in path:
            target = target.setdefault(part, {})
        target[last] = int(value)
    for key, value in (params or {}).items():
        runtime[key] = {**runtime[key], **value} if isinstance(value, dict) and key in runtime else value
    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=env, runtime_params=runtime) as session:
        session.run(pipeline_names=pipelines, to_outputs=to_outputs)


def latest(root: Path, pattern: str) -> Path:
    """The newest version of a versioned dataset under ``root``."""
    return sorted(root.glob(pattern))[-1]


def copy_run(run: Path, root: Path) -> Path:
    """A copy of a finished run (project and data) that a test may change without touching the others'."""
    shutil.copytree(run, root, ignore=shutil.ignore_patterns(".run.lock"))
    return root


def save_hub_model(cache: Path, repo: str, revision: str, family: str, tokenizer: PreTrainedTokenizerBase,
                   seed: int, **shape: int) -> Path:
    """A tiny random model of ``family`` saved in a Hub-layout cache (``models--org--name/snapshots/<hash>``
    with ``refs/<revision>`` naming the hash), loadable offline with ``HF_HUB_CACHE`` pointing at ``cache``."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer), **shape), attn_implementation="eager")
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


def offline_env(cache: Path) -> dict[str, str]:
    """The environment of a run that loads its models from the Hub-layout ``cache`` only."""
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

"""Models at training checkpoints, offline, through the real loading path.

A Hugging Face cache laid out as the Hub lays it out (``models--org--name/refs/<revision>`` holding
a commit hash, ``snapshots/<hash>/`` the files) holds tiny random GPT-NeoX models saved under several
revision names. Loading happens in subprocesses with ``HF_HUB_CACHE`` pointing there and
``HF_HUB_OFFLINE=1``, since the Hugging Face libraries read both once, at import.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import copy_project
from runs import save_hub_model

from ioi_anti.models.checkpoints import parse_model_id
from ioi_anti.models.spec import ModelConfigError, ModelSpec
from ioi_anti.params import Registry

REPO = "test-org/tiny-neox"
REVISIONS = ("step1", "step2", "step4")
ENTRY = {"family": "pythia", "source": "hub", "hf_name": REPO, "prepend_bos": True, "quantisation": "none",
         "licence": "Apache-2.0"}


def test_model_ids_name_checkpoints() -> None:
    assert parse_model_id("pythia-160m@step3000").training_step == 3000
    final = parse_model_id("pythia-160m")
    assert final.revision is None and final.label == "final" and math.isnan(final.training_step)
    assert math.isnan(parse_model_id("gpt2@main").training_step)
    with pytest.raises(ValueError, match="<registry id>@<revision>"):
        parse_model_id("pythia-160m@")
    registry = Registry.model_validate({"tiny": ENTRY, "embedded": {"family": "llama", "source": "gguf", "hf_name": "x",
                                                                    "package": "p", "gguf_file": "f.gguf",
                                                                    "prepend_bos": False, "quantisation": "Q4_0",
                                                                    "licence": "MIT"}})
    assert ModelSpec.from_registry("tiny@step2", registry).revision == "step2"
    with pytest.raises(ModelConfigError, match="needs a Hub model"):
        ModelSpec.from_registry("embedded@step2", registry)
    with pytest.raises(ModelConfigError, match="Unknown model id 'nope'"):
        ModelSpec.from_registry("nope@step2", registry)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer) -> Path:
    """A Hub-layout cache of ``REPO`` with one tiny random model (its own seed) per revision."""
    cache = tmp_path_factory.mktemp("hf-cache")
    for seed, revision in enumerate(REVISIONS):
        save_hub_model(cache, REPO, revision, "pythia", smol_tokenizer, seed)
    return cache


def _offline_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "1",
            "TQDM_DISABLE": "1", "COLUMNS": "400"}


LOAD = """
import json, sys, torch
from ioi_anti.models.loading import ModelSpec, check_available, load_model
from ioi_anti.params import Registry
spec = ModelSpec.from_registry(sys.argv[1], Registry.model_validate({"tiny-neox": json.loads(sys.argv[2])}))
check_available(spec)
lm = load_model(spec, "cpu", "float32")
torch.manual_seed(0)
ids = torch.randint(0, 1000, (1, 6))
print(json.dumps({**lm.describe(), "logit": float(lm.bridge(ids, use_cache=False)[0, -1, 0])}))
"""


def _load(cache: Path, model_id: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOAD, model_id, json.dumps(ENTRY)], env=_offline_env(cache),
                          capture_output=True, text=True, timeout=300)


def test_checkpoints_load_offline_through_the_project_loader(hub_cache: Path) -> None:
    described = {}
    for revision in REVISIONS:
        done = _load(hub_cache, f"tiny-neox@{revision}")
        assert done.returncode == 0, done.stderr[-3000:]
        described[revision] = json.loads(done.stdout.strip().splitlines()[-1])
    assert [d["training_step"] for d in described.values()] == [1.0, 2.0, 4.0]
    assert {d["checkpoint"] for d in described.values()} == set(REVISIONS)
    assert len({d["logit"] for d in described.values()}) == len(REVISIONS), "each revision has its own weights"


def test_unknown_revision_is_a_clear_error(hub_cache: Path) -> None:
    done = _load(hub_cache, "tiny-neox@step3")
    assert done.returncode != 0
    assert "tiny-neox@step3" in done.stderr and "no revision 'step3'" in done.stderr, done.stderr[-2000:]


SMALL = ",".join([
    "data_generation.ioi.n_prompts=6", "data_generation.ioi.mean_pool_per_template=1",
    "data_generation.anti.n_prompts=9", "data_generation.anti.mean_pool_per_template=1",
    "baseline.n_boot=100", "head_ablation.n_boot=100", "categorisation.n_boot=100", "hero_heads.n_boot=100",
    "hero_heads.max_prompts=3", "hero_heads.topk_max=2", "hero_heads.max_receivers=2", "hero_heads.dose_steps=3",
])


@pytest.mark.e2e
def test_a_run_over_checkpoints_draws_roles_across_training(hub_cache: Path, tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project")
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump({
        "models": [f"tiny-neox@{r}" for r in REVISIONS],
        "model_registry": {"tiny-neox": ENTRY},
    }))
    done = subprocess.run([sys.executable, "-m", "kedro", "run", "--params", SMALL], cwd=root,
                          env=_offline_env(hub_cache), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    per_head = pd.read_parquet(sorted(root.glob("data/07_model_output/per_head.parquet/*/per_head.parquet"))[-1])
    assert set(per_head["checkpoint"]) == set(REVISIONS) and set(per_head["training_step"]) == {1.0, 2.0, 4.0}
    assert set(per_head["base_model"]) == {"tiny-neox"} and len(per_head) == 3 * 3 * 4
    assert (root / "data/08_reporting/training/training_dynamics.png").stat().st_size > 10_000
    report = sorted(root.glob("data/08_reporting/report.md/*/report.md"))[-1].read_text()
    assert "## Across training" in report and "training_dynamics.png" in report
    prefixes = {p.name.split("__")[0] for p in (root / "data/07_model_output/head_effects_per_prompt").iterdir()}
    assert prefixes == {f"tiny-neox@{r}" for r in REVISIONS}, "each checkpoint has partitions of its own"

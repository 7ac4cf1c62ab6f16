"""Shared fixtures: the embedded model's tokenizer, data-generation parameters, tiny models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from base_params import settings
from transformers import PreTrainedTokenizerBase

from ioi_anti.measure.ablation import AblationValues, PromptGroup, make_groups
from ioi_anti.models.loading import LoadedModel, load_model, load_tokenizer
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import DataGeneration, Registry
from ioi_anti.tasks import PAIR, load_task, make_task_prompts
from ioi_anti.tasks import prompts as P

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROJECT = Path(__file__).resolve().parents[1]
TIERS = ("integration", "e2e", "hub")
EMBEDDED_MODELS = {"smol", "smol_bf16", "gemma", "gemma_bf16", "qwen"}  # fixtures that load an embedded model


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that loads an embedded model is an integration test; every test of no other tier is a unit
    test (``pytest -m unit``: the fast tier, ``make test-fast``)."""
    for item in items:
        if EMBEDDED_MODELS & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)


def copy_project(root: Path) -> Path:
    """A copy of the project's conf, notebooks, sources and shipped raw data (the published tables) with
    nothing else in its data folder."""
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "notebooks", root / "notebooks")
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(PROJECT / "data" / "01_raw" / "published", root / "data" / "01_raw" / "published")
    return root


def project_params(name: str) -> dict[str, Any]:
    """A parameters file of conf/base as a dict."""
    return yaml.safe_load((PROJECT / "conf" / "base" / name).read_text())


@pytest.fixture(scope="session")
def registry() -> Registry:
    return settings().model_registry


@pytest.fixture(scope="session")
def smol_spec(registry: Registry) -> ModelSpec:
    return ModelSpec.from_registry("smollm2-135m", registry)


@pytest.fixture(scope="session")
def smol_tokenizer(smol_spec: ModelSpec) -> PreTrainedTokenizerBase:
    return load_tokenizer(smol_spec)


@pytest.fixture(scope="session")
def smol(smol_spec: ModelSpec) -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct, on CPU (loads offline in ~20 s)."""
    return load_model(smol_spec, "cpu", "float32")


@pytest.fixture(scope="session")
def smol_bf16(smol_spec: ModelSpec) -> LoadedModel:
    """SmolLM2-135M in mixed bfloat16 (``runtime.dtype: bfloat16``)."""
    return load_model(smol_spec, "cpu", "bfloat16")


@pytest.fixture(scope="session")
def gemma_spec(registry: Registry) -> ModelSpec:
    return ModelSpec.from_registry("gemma3-270m", registry)


@pytest.fixture(scope="session")
def gemma(gemma_spec: ModelSpec) -> LoadedModel:
    """The embedded Gemma-3-270M base, on CPU (assembled once, then ~50 s to parse)."""
    return load_model(gemma_spec, "cpu", "float32")


@pytest.fixture(scope="session")
def gemma_bf16(gemma_spec: ModelSpec) -> LoadedModel:
    """Gemma-3-270M in mixed bfloat16 (``runtime.dtype: bfloat16``)."""
    return load_model(gemma_spec, "cpu", "bfloat16")


@pytest.fixture(scope="session")
def qwen_spec(registry: Registry) -> ModelSpec:
    """Qwen2.5-Coder-0.5B-Instruct; its tests skip, naming the install, where the `scale` extra is missing."""
    spec = ModelSpec.from_registry("qwen2.5-coder-0.5b", registry)
    assert spec.chunks is not None
    if spec.chunks.missing():
        pytest.skip(f"qwen2.5-coder-0.5b: chunk packages not installed ({spec.install})")
    return spec


@pytest.fixture(scope="session")
def qwen(qwen_spec: ModelSpec) -> LoadedModel:
    """The embedded Qwen2.5-Coder-0.5B-Instruct, on CPU (assembled once, then ~45 s to de-quantise)."""
    return load_model(qwen_spec, "cpu", "float32")


@pytest.fixture(scope="session")
def qwen_tokens_by_task(qwen_spec: ModelSpec) -> dict[str, pd.DataFrame]:
    """Small prompt sets in Qwen's tokenizer (no BOS)."""
    return small_prompt_sets(load_tokenizer(qwen_spec), qwen_spec.prepend_bos)


@pytest.fixture()
def dg_params() -> DataGeneration:
    """The base ``data_generation`` settings, typed (a task reads its section with ``Task.read_settings``)."""
    return settings().data_generation


def small_prompt_sets(tokenizer: PreTrainedTokenizerBase, prepend_bos: bool) -> dict[str, pd.DataFrame]:
    """Small tokenised IOI and anti-repetition prompt sets (12 and 10 clean prompts)."""
    data_generation = settings(data_generation__ioi__n_prompts=12, data_generation__ioi__mean_pool_per_template=2,
                               data_generation__anti__n_prompts=10,
                               data_generation__anti__mean_pool_per_template=2).data_generation
    frame, _ = make_task_prompts(PAIR, data_generation, {"model": tokenizer}, 0)
    return {task: P.tokenise_prompts(frame[frame["task"] == task], tokenizer, prepend_bos) for task in PAIR}


@pytest.fixture(scope="session")
def tokens_by_task(smol_tokenizer: PreTrainedTokenizerBase) -> dict[str, pd.DataFrame]:
    """Small prompt sets in the embedded SmolLM2's tokenizer (used by the tiny models too)."""
    return small_prompt_sets(smol_tokenizer, False)


@pytest.fixture(scope="session")
def gemma_tokens_by_task(gemma_spec: ModelSpec) -> dict[str, pd.DataFrame]:
    """Small prompt sets in the embedded Gemma's tokenizer, with its BOS."""
    return small_prompt_sets(load_tokenizer(gemma_spec), gemma_spec.prepend_bos)


def setup_task(
    lm: LoadedModel, tokens: pd.DataFrame, task: str, kind: str, max_batch: int = 6
) -> tuple[list[PromptGroup], AblationValues]:
    """Clean groups of a task and its ablation values."""
    groups = make_groups(tokens[tokens["role"] == "clean"], lm.device, max_batch)
    pool = make_groups(tokens[tokens["role"].isin(load_task(task).ablation_roles)], lm.device, max_batch)
    return groups, AblationValues(kind, lm, pool, seed=0)

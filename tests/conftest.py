"""Shared fixtures: the embedded model's tokenizer, data-generation parameters, tiny models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from transformers import PreTrainedTokenizerBase

from ioi_anti.models import LoadedModel, ModelSpec, load_model, load_tokenizer

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROJECT = Path(__file__).resolve().parents[1]


def project_params(name: str) -> dict[str, Any]:
    """A parameters file of conf/base as a dict."""
    return yaml.safe_load((PROJECT / "conf" / "base" / name).read_text())


@pytest.fixture(scope="session")
def registry() -> dict[str, Any]:
    return project_params("parameters.yml")["model_registry"]


@pytest.fixture(scope="session")
def smol_spec(registry: dict[str, Any]) -> ModelSpec:
    return ModelSpec.from_registry("smollm2-135m", registry)


@pytest.fixture(scope="session")
def smol_tokenizer(smol_spec: ModelSpec) -> PreTrainedTokenizerBase:
    return load_tokenizer(smol_spec)


@pytest.fixture(scope="session")
def smol(smol_spec: ModelSpec) -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct, on CPU (loads offline in ~20 s)."""
    return load_model(smol_spec, "cpu", "float32")


@pytest.fixture()
def dg_params() -> dict[str, Any]:
    return project_params("parameters_data_generation.yml")["data_generation"]

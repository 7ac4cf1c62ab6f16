"""The one loader every pipeline uses: whatever its source, a model ends up as a TransformerLens
4.x ``TransformerBridge`` wrapped in a :class:`LoadedModel`, so that hooking and ablation code never
cares where weights came from; loaded models are kept in a size-bounded cache per process.
"""
from __future__ import annotations

import copy
import functools
import gc
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ioi_anti.models.precision import HALF_TYPES, half_matrix_products, set_tf32
from ioi_anti.models.quantise import quantise_weights
from ioi_anti.models.sources import check_available, check_quantisation, estimated_bytes, gguf_path, hub_is_cached
from ioi_anti.models.spec import ModelConfigError, ModelSpec
from ioi_anti.params import PRECISIONS, Runtime

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A bridge-wrapped model with its tokenizer and the facts the study records about it."""

    spec: ModelSpec
    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    n_layers: int
    n_heads: int
    d_head: int
    n_params: int
    device: torch.device
    precision: str = "float32"

    def describe(self) -> dict[str, Any]:
        """The model's config facts, as recorded next to every result."""
        checkpoint = self.spec.checkpoint
        return {
            "model_id": self.spec.model_id,
            "base_model": checkpoint.base_model,
            "checkpoint": checkpoint.label,
            "training_step": checkpoint.training_step,
            "family": self.spec.family,
            "tuning": self.spec.tuning,
            "quantisation": self.spec.quantisation,
            "licence": self.spec.licence,
            "source": self.spec.source,
            "hf_name": self.spec.hf_name,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "n_params": self.n_params,
            "device": str(self.device),
            "dtype": self.precision,
        }


def resolve_device(device: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_precision(dtype: str) -> str:
    """``runtime.dtype`` checked: float32, or a half type for mixed precision (:mod:`ioi_anti.models.precision`)."""
    if dtype not in PRECISIONS:
        raise ModelConfigError(f"runtime.dtype {dtype!r} is not one of {', '.join(PRECISIONS)}.")
    return dtype


def model_grid(spec: ModelSpec) -> tuple[int, int]:
    """(layers, heads per layer) from the model's config alone, without loading its weights
    (a GGUF header takes seconds to parse: ~3 s SmolLM2, ~15 s Gemma-3)."""
    check_available(spec)
    if spec.source == "gguf":
        path = gguf_path(spec)
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    else:
        config = AutoConfig.from_pretrained(spec.hf_name, revision=spec.revision)
    return int(config.num_hidden_layers), int(config.num_attention_heads)


@functools.cache
def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone, parsed once per process (a GGUF tokenizer takes up to ~20 s)."""
    if spec.source == "gguf":
        path = gguf_path(spec)
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    local = hub_is_cached(spec.hf_name, spec.revision)
    return AutoTokenizer.from_pretrained(spec.hf_name, revision=spec.revision, local_files_only=local)


def wrap_model(
    spec: ModelSpec,
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    precision: str = "float32",
) -> LoadedModel:
    """Wrap a loaded Hugging Face model in a ``TransformerBridge`` (works offline), its blocks' matrix
    products in ``precision`` (:mod:`ioi_anti.models.precision`)."""
    hf_model = hf_model.to(device).eval()
    if not hf_model.config.architectures:
        # GGUF-loaded configs (Gemma 3) carry no architectures; the bridge picks its adapter by them.
        hf_model.config.architectures = [type(hf_model).__name__]
    if spec.revision:
        # TransformerLens re-loads a tokenizer by name (without the revision) to make it add BOS,
        # which fails offline for a checkpoint; the bridge's own tokenizer is never used to tokenise
        # here (prompts carry their BOS explicitly), so it gets a copy that says it adds BOS already.
        tokenizer = copy.copy(tokenizer)
        tokenizer.init_kwargs = {**tokenizer.init_kwargs, "add_bos_token": True}
    bridge = TransformerBridge.boot_transformers(spec.hf_name, hf_model=hf_model, tokenizer=tokenizer)
    bridge.eval()
    for param in bridge.parameters():
        param.requires_grad_(False)
    n_params = sum(p.numel() for p in hf_model.parameters())
    if check_precision(precision) in HALF_TYPES and not half_matrix_products(bridge.blocks, HALF_TYPES[precision]):
        raise ModelConfigError(f"{spec.model_id}: no linear layers found in its blocks, so runtime.dtype "
                               f"{precision!r} has nothing to apply to; use float32.")
    cfg = bridge.cfg
    return LoadedModel(
        spec=spec,
        bridge=bridge,
        tokenizer=tokenizer,
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_head=int(cfg.d_head),
        n_params=n_params,
        device=device,
        precision=precision,
    )


def weights_bytes(lm: LoadedModel) -> int:
    """Bytes of a loaded model's parameters and buffers."""
    model = lm.bridge.original_model
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def device_key(device: str) -> str:
    """The device a setting names, spelled one way (``auto`` -> ``cpu`` or ``cuda:0``; ``cuda`` -> ``cuda:<n>``)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(resolved)


class ModelCache:
    """Loaded models kept between the steps of a run, within a memory budget.

    A run measures each model in several steps (baseline, head sweep, hero studies), so reloading a
    GGUF model each time (20-120 s of de-quantisation) is worth avoiding, but four models at once do not
    fit in memory. Models stay loaded while the weights of all of them fit in ``budget_bytes``; a model
    that would not fit beside them is loaded after releasing them all, so the peak is never more than
    one model's loading beyond the budget. A model is released only when another one is asked for, never
    while it is in use.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.loaded: dict[tuple[ModelSpec, str, str], tuple[LoadedModel, int]] = {}

    def get(self, spec: ModelSpec, device: str, dtype: str) -> LoadedModel:
        """The model on ``device`` in ``dtype``, loaded unless kept; ``auto``, ``cpu`` and ``cuda`` are keyed by the
        device they resolve to, so two spellings of one device never load a model twice."""
        key = (spec, device_key(device), dtype)
        if key in self.loaded:
            return self.loaded[key][0]
        kept = sum(size for _, size in self.loaded.values())
        size = estimated_bytes(spec)
        if self.loaded and (size is None or kept + size > self.budget_bytes):
            logger.info("Releasing %s before loading %s (runtime.keep_loaded_gb = %.1f).",
                        ", ".join(k[0].model_id for k in self.loaded), spec.model_id, self.budget_bytes / 1e9)
            self.clear()
        lm = _load(spec, device, dtype)
        self.loaded[key] = (lm, weights_bytes(lm))
        return lm

    def clear(self) -> None:
        """Release every kept model (and the memory of their weights, reference cycles included)."""
        self.loaded.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


DEFAULT_KEEP_LOADED_GB = 4.0


_CACHE = ModelCache(int(DEFAULT_KEEP_LOADED_GB * 1e9))


def load_model(spec: ModelSpec, device: str = "auto", dtype: str = "float32",
               keep_loaded_gb: float | None = None) -> LoadedModel:
    """Load a registry model through the bridge, reusing one this process already holds.

    ``keep_loaded_gb`` (``runtime.keep_loaded_gb``) sets how many GB of weights stay loaded between the
    steps of a run (:class:`ModelCache`). Results never depend on the cache.
    """
    if keep_loaded_gb is not None:
        _CACHE.budget_bytes = int(keep_loaded_gb * 1e9)
    return _CACHE.get(spec, device, dtype)


def load_run_model(spec: ModelSpec, runtime: Runtime) -> LoadedModel:
    """:func:`load_model` with a run's ``runtime`` settings (device, dtype, tf32, keep_loaded_gb)."""
    set_tf32(runtime.tf32)
    return load_model(spec, runtime.device, runtime.dtype, runtime.keep_loaded_gb)


def release_models() -> None:
    """Release every model this process keeps loaded (when a run ends)."""
    _CACHE.clear()


def load_quantised(spec: ModelSpec, runtime: Runtime, kind: str, seed: int) -> tuple[LoadedModel, pd.DataFrame]:
    """A registry model of its own (never the cache's) whose float weights are quantised to GGUF type ``kind``
    (:func:`~ioi_anti.models.quantise.quantise_weights`) before it is wrapped, so a bfloat16 run rounds them
    as it would the shipped ones; with the change made to every tensor."""
    set_tf32(runtime.tf32)
    hf_model = _hf_model(spec, resolve_device(runtime.device), runtime.dtype)
    changes = quantise_weights(hf_model, kind, seed)
    return wrap_model(spec, hf_model, load_tokenizer(spec), resolve_device(runtime.device), runtime.dtype), changes


def _hf_model(spec: ModelSpec, device: torch.device, dtype: str) -> PreTrainedModel:
    """The registry model's Hugging Face model in float32 (a GGUF file de-quantised), not yet wrapped."""
    check_available(spec)
    logger.info("Loading %s (%s%s) on %s as %s", spec.model_id, spec.where, ", GGUF" if spec.source == "gguf" else "",
                device, dtype)
    if spec.source == "gguf":
        path = gguf_path(spec)
        check_quantisation(spec, path)
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    local = hub_is_cached(spec.hf_name, spec.revision)
    return AutoModelForCausalLM.from_pretrained(spec.hf_name, revision=spec.revision, dtype=torch.float32,
                                                local_files_only=local)


def _load(spec: ModelSpec, device: str, dtype: str) -> LoadedModel:
    torch_device = resolve_device(device)
    return wrap_model(spec, _hf_model(spec, torch_device, dtype), load_tokenizer(spec), torch_device, dtype)

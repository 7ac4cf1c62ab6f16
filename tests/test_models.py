"""The loader: tiny random models of every family offline, the embedded model, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import TINY_FAMILIES, tiny_model

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


def test_unreachable_hub_model_fails_with_instructions(monkeypatch: pytest.MonkeyPatch, registry) -> None:
    monkeypatch.setattr("ioi_anti.models.hub_is_cached", lambda name: False)
    monkeypatch.setattr("ioi_anti.models.hub_is_reachable", lambda name, timeout=10.0: False)
    with pytest.raises(ModelUnavailableError, match="neither in the Hugging Face cache nor reachable"):
        check_available(ModelSpec.from_registry("gpt2", registry))


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ModelConfigError, match="not a torch dtype"):
        resolve_dtype("float33")


def test_registry_entries_are_valid(registry) -> None:
    specs = resolve_models(list(registry), registry)
    assert {s.family for s in specs} == {"gpt2", "gpt-neo", "opt", "pythia", "llama"}
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

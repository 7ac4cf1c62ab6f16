"""Tiny randomly initialised models of every architecture family, built offline."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from ioi_anti.models.loading import LoadedModel, wrap_model
from ioi_anti.models.spec import ModelSpec

TINY_FAMILIES = ("gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma", "qwen2")


def tiny_config(family: str, vocab_size: int, n_layers: int = 3, n_heads: int = 4, hidden: int = 32):
    """A config of ``family`` with the given vocabulary: 3 layers of 4 heads, 32 wide (GPT-2, Pythia and
    Llama: ``n_layers`` x ``n_heads``, ``hidden`` wide)."""
    common = {"vocab_size": vocab_size}
    if family == "gpt2":
        cfg = GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=hidden, n_positions=128, **common)
    elif family == "gpt-neo":
        cfg = GPTNeoConfig(
            num_layers=3, num_heads=4, hidden_size=32, max_position_embeddings=128,
            attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=8, **common
        )
    elif family == "opt":
        cfg = OPTConfig(
            num_hidden_layers=3, num_attention_heads=4, hidden_size=32, ffn_dim=64,
            word_embed_proj_dim=32, max_position_embeddings=128, **common
        )
    elif family == "pythia":
        cfg = GPTNeoXConfig(
            num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=hidden, intermediate_size=2 * hidden,
            max_position_embeddings=128, rotary_pct=0.25, **common
        )
    elif family == "llama":
        cfg = LlamaConfig(
            num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
            hidden_size=hidden, intermediate_size=2 * hidden, max_position_embeddings=128, **common
        )
    elif family == "gemma":
        # A window of 4 tokens on layers 0 and 2 and a global layer 1: on prompts of 20+ tokens the
        # sliding and global masks really differ, as they do for long prompts of Gemma-3.
        cfg = Gemma3TextConfig(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=8, hidden_size=32,
            intermediate_size=64, max_position_embeddings=128, query_pre_attn_scalar=8, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"], **common
        )
    elif family == "qwen2":
        # Grouped KV heads like Llama, plus the biases on q, k and v that set Qwen2 apart; untied
        # embeddings, as the GGUF-loaded Qwen2.5-Coder models have.
        cfg = Qwen2Config(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
            intermediate_size=64, max_position_embeddings=128, tie_word_embeddings=False, **common
        )
    else:
        raise ValueError(family)
    return cfg


def tiny_model(family: str, tokenizer: PreTrainedTokenizerBase, seed: int = 0,
               dtype: torch.dtype = torch.float32, precision: str = "float32",
               initializer_range: float | None = None) -> LoadedModel:
    """A random tiny model of ``family`` wrapped by the project's loader (``float64`` where a test's
    effects are so small that float32 rounding would be a visible share of them; ``precision``: the
    mixed precision of ``runtime.dtype``; ``initializer_range``: the weights' standard deviation
    instead of the config's 0.02, where a test needs effects far above bfloat16's rounding)."""
    torch.manual_seed(seed)
    cfg = tiny_config(family, len(tokenizer))
    if initializer_range is not None:
        cfg.initializer_range = initializer_range
    hf_model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(dtype)
    if family == "qwen2":
        with torch.no_grad():  # initialised to zero, which would leave the q/k/v biases untested
            for name, param in hf_model.named_parameters():
                if name.endswith("_proj.bias"):
                    param.normal_(0.0, 0.1)
    spec = ModelSpec(
        model_id=f"tiny-{family}", family=family, source="hub",
        hf_name=f"tiny-{family}", prepend_bos=family not in ("llama", "qwen2"), quantisation="none",
        licence="random weights",
    )
    return wrap_model(spec, hf_model, tokenizer, torch.device("cpu"), precision)

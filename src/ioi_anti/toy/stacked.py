"""Many toy GPT-2 models of one shape as one batched computation, for training a grid at once.

The models of a grid share their shape per size, so their parameters stack along a leading model axis
and a step of all of them is a handful of batched matrix products instead of one small Hugging Face
forward per model (a toy model's step is dominated by per-module overhead, not by arithmetic). Written
out by hand rather than with ``torch.func.vmap`` over ``GPT2LMHeadModel``: the forward is twenty lines of
GPT-2 (the same parameter names and layout, so a model's slice loads into ``GPT2LMHeadModel`` unchanged;
``tests/test_toy_models.py`` checks the two forwards agree), it runs under plain autograd, and a finished
model can leave the group by slicing. Every operation acts on each model's slice alone, so a model
trained in a group follows the same arithmetic as trained alone.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 - torch's own convention
from transformers import GPT2Config, GPT2LMHeadModel

TIED = "lm_head.weight"  # GPT-2 ties the unembedding to the token embedding


class StackedGPT2:
    """The parameters of ``M`` GPT-2 models of one config, each stacked on a leading model axis, keyed by
    the names of ``GPT2LMHeadModel``'s state dict (the tied ``lm_head.weight`` left out)."""

    def __init__(self, config: GPT2Config, params: dict[str, Tensor]) -> None:
        self.config = config
        self.params = params

    @classmethod
    def stack(cls, models: list[GPT2LMHeadModel]) -> StackedGPT2:
        """The models' parameters stacked (as trainable leaf tensors), in the order given."""
        states = [model.state_dict() for model in models]
        params = {name: torch.stack([state[name] for state in states]).detach().clone().requires_grad_(True)
                  for name in states[0] if name != TIED}
        return cls(models[0].config, params)

    def __len__(self) -> int:
        return len(self.params["transformer.wte.weight"])

    def model(self, index: int) -> GPT2LMHeadModel:
        """The ``index``-th model as a ``GPT2LMHeadModel`` in evaluation mode (a copy of its weights)."""
        model = GPT2LMHeadModel(self.config)
        state = {name: value[index].detach().clone() for name, value in self.params.items()}
        model.load_state_dict(state | {TIED: state["transformer.wte.weight"]})
        return model.eval()

    def keep(self, indices: list[int]) -> StackedGPT2:
        """A group of the models at ``indices`` only (new leaf tensors)."""
        picked = torch.tensor(indices)
        return StackedGPT2(self.config, {name: value.detach()[picked].clone().requires_grad_(True)
                                         for name, value in self.params.items()})

    def _norm(self, x: Float[Tensor, "m b t d"], name: str) -> Float[Tensor, "m b t d"]:
        weight, bias = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        return F.layer_norm(x, x.shape[-1:], eps=self.config.layer_norm_epsilon) * weight[:, None, None] \
            + bias[:, None, None]

    def _linear(self, x: Float[Tensor, "m b t i"], name: str) -> Float[Tensor, "m b t o"]:
        """GPT-2's ``Conv1D``: ``x @ W + b`` with ``W`` stored as (in, out)."""
        weight, bias = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        m, b, t, i = x.shape
        return torch.baddbmm(bias[:, None], x.reshape(m, b * t, i), weight).reshape(m, b, t, -1)

    def logits(self, ids: Int[Tensor, "m b t"]) -> Float[Tensor, "m b t v"]:
        """Every model's next-token logits for its own batch of token ids (causal attention; padding at the
        end of a row does not change the logits before it)."""
        cfg, p = self.config, self.params
        m, b, t = ids.shape
        heads, width = cfg.n_head, cfg.n_embd // cfg.n_head
        # the embedding as a product with one-hot rows: the backward of an indexed gather accumulates in a
        # thread-dependent order on the CPU, so the same seed would not train the same model twice
        one_hot = F.one_hot(ids, cfg.vocab_size).to(p["transformer.wte.weight"].dtype).reshape(m, b * t, -1)
        x = torch.bmm(one_hot, p["transformer.wte.weight"]).reshape(m, b, t, -1)
        x = x + p["transformer.wpe.weight"][:, None, :t]
        for layer in range(cfg.n_layer):
            block = f"transformer.h.{layer}"
            q, k, v = self._linear(self._norm(x, f"{block}.ln_1"), f"{block}.attn.c_attn").split(cfg.n_embd, -1)
            q, k, v = (y.reshape(m * b, t, heads, width).transpose(1, 2) for y in (q, k, v))
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self._linear(mixed.transpose(1, 2).reshape(m, b, t, cfg.n_embd), f"{block}.attn.c_proj")
            hidden = F.gelu(self._linear(self._norm(x, f"{block}.ln_2"), f"{block}.mlp.c_fc"), approximate="tanh")
            x = x + self._linear(hidden, f"{block}.mlp.c_proj")
        x = self._norm(x, "transformer.ln_f")
        return torch.bmm(x.reshape(m, b * t, -1), p["transformer.wte.weight"].transpose(1, 2)).reshape(m, b, t, -1)

    def token_losses(self, ids: Int[Tensor, "m b t"]) -> Float[Tensor, "m b t-1"]:
        """Every model's cross-entropy of each next token (the last position predicts nothing)."""
        logits = self.logits(ids)[:, :, :-1]
        return F.cross_entropy(logits.flatten(0, 2), ids[:, :, 1:].flatten(), reduction="none").view(ids.shape[0],
                                                                                                  ids.shape[1], -1)


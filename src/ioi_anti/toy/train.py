"""Training toy GPT-2 models from scratch on the toy language, deterministically by seed.

A toy model is a Hugging Face ``GPT2LMHeadModel`` (an architecture the study already measures), so a
trained one is wrapped by :func:`ioi_anti.models.loading.wrap_model` and measured by the same code as the
pretrained models. Training is next-token cross-entropy at the trained positions of each sequence
(:class:`ioi_anti.toy.language.TrainingSequence`), AdamW with a linear warm-up and decay; the loss
of every step is kept for the loss curve.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ioi_anti.models.loading import LoadedModel, wrap_model
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import ToyGrid, ToyLanguageSettings, ToyModels, ToySize, ToyTraining
from ioi_anti.toy.language import KINDS, ToyLanguage, encode, mixture

logger = logging.getLogger(__name__)

MAX_POSITIONS = 64  # longer than any sequence of the language


@dataclass(frozen=True)
class ToyRun:
    """One model of the grid: its size (name and shape), the objective mix λ and the seed."""

    size: ToySize
    mix: float
    seed: int

    @property
    def model_id(self) -> str:
        """``toy-<size>-mix<λ>-seed<seed>``, e.g. ``toy-small-mix0.50-seed1``."""
        return f"toy-{self.size.name}-mix{self.mix:.2f}-seed{self.seed}"


def grid(grid: ToyGrid) -> list[ToyRun]:
    """Every model of ``toy_models.grid``: sizes x mixes x seeds, in that order."""
    return [ToyRun(size, mix, seed) for size in grid.sizes for mix in grid.mixes for seed in grid.seeds]


def toy_config(size: ToySize, vocab_size: int) -> GPT2Config:
    """A GPT-2 config of ``size``'s shape without dropout, for the language's vocabulary."""
    return GPT2Config(vocab_size=vocab_size, n_positions=MAX_POSITIONS, n_layer=size.n_layer, n_head=size.n_head,
                      n_embd=size.n_embd, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                      eos_token_id=1)


def train(run: ToyRun, language: ToyLanguage, tokenizer: PreTrainedTokenizerFast,
          training: ToyTraining) -> tuple[GPT2LMHeadModel, pd.DataFrame]:
    """A model of ``run`` trained on the language's mix λ; and its loss per step (columns step, loss,
    loss_ioi, loss_list, loss_copy: the mean cross-entropy of each kind's trained tokens in the batch)."""
    torch.manual_seed(run.seed)
    rng = np.random.default_rng([run.seed, int(round(run.mix * 1000)), 7])
    model = GPT2LMHeadModel(toy_config(run.size, len(tokenizer))).train()
    steps, batch = training.steps, training.batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    warmup = max(1, training.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    vocab = tokenizer.get_vocab()
    rows = []
    for step in tqdm(range(steps), desc=run.model_id, unit="step", leave=False):
        kinds = mixture(rng, batch, run.mix)
        ids, trained = encode([language.training_sequence(rng, kind) for kind in kinds], vocab)
        ids_t, mask = torch.from_numpy(ids), torch.from_numpy(trained)
        logits = model(ids_t).logits[:, :-1]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids_t[:, 1:], reduction="none")
        loss = losses[mask].mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        by_kind, detached = {}, losses.detach()
        for kind in KINDS:
            rows_of_kind = torch.tensor([k == kind for k in kinds])
            picked = detached[rows_of_kind][mask[rows_of_kind]]
            by_kind[f"loss_{kind}"] = float(picked.mean()) if picked.numel() else float("nan")
        rows.append({"step": step, "loss": float(loss), **by_kind})
    return model.eval(), pd.DataFrame(rows)


def to_bytes(model: GPT2LMHeadModel, losses: pd.DataFrame) -> bytes:
    """A trained model's config, weights and loss curve as one file's bytes (``torch.save``)."""
    buffer = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict(),
                "losses": {column: losses[column].tolist() for column in losses.columns}}, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> tuple[GPT2LMHeadModel, pd.DataFrame]:
    """The model and loss curve saved by :func:`to_bytes` (an error for a damaged file)."""
    saved = torch.load(io.BytesIO(data), weights_only=True)
    model = GPT2LMHeadModel(GPT2Config.from_dict(saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), pd.DataFrame(saved["losses"])


def loaded(run: ToyRun, model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast) -> LoadedModel:
    """A trained toy model wrapped like any model of the study (family gpt2, prompts with BOS)."""
    spec = ModelSpec(model_id=run.model_id, family="gpt2", source="hub", hf_name="gpt2", prepend_bos=True)
    return wrap_model(spec, model, tokenizer, torch.device("cpu"))


def settings_fingerprint(language: ToyLanguageSettings, training: ToyTraining) -> str:
    """What a trained model depends on besides its size, mix and seed: the language and the training (a hash of
    their settings' sorted JSON)."""
    settings = json.dumps({"language": language.model_dump(), "training": training.model_dump()}, sort_keys=True)
    return "t" + hashlib.sha256(settings.encode()).hexdigest()[:11]


def partition_key(settings: ToyModels, run: ToyRun) -> str:
    """The partition a trained model is saved under: the fingerprint of the language and training settings,
    then the model id."""
    return f"{settings_fingerprint(settings.language, settings.training)}/{run.model_id}"


def is_intact(load: Callable[[], bytes], key: str) -> bool:
    """Whether a saved model can be read back (a damaged file is logged and trained again)."""
    try:
        from_bytes(load())
    except Exception as error:  # noqa: BLE001 - any unreadable file is retrained, whatever the reader raises
        logger.warning("Trained toy model %s is damaged (%s): it is trained again.", key, error)
        return False
    return True


def training_jobs(done: dict[str, Callable[[], bytes]], settings: ToyModels) -> dict[str, Callable[[], bytes]]:
    """One partition per model of the grid not trained yet with these settings, each trained when it is
    saved (so an interrupted grid keeps every finished model, and a re-run trains only the rest)."""
    language = ToyLanguage.from_settings(settings.language)
    tokenizer = language.tokenizer()
    keys = {run: partition_key(settings, run) for run in grid(settings.grid)}
    todo = [run for run, key in keys.items() if key not in done or not is_intact(done[key], key)]
    total = len(keys)
    if len(todo) < total:
        logger.info("Toy models: %d of %d already trained with these settings; training %d.", total - len(todo),
                    total, len(todo))

    def job(run: ToyRun, number: int) -> Callable[[], bytes]:
        def trained() -> bytes:
            logger.info("Training toy model %d of %d: %s.", number, len(todo), run.model_id)
            model, losses = train(run, language, tokenizer, settings.training)
            return to_bytes(model, losses)
        return trained

    todo.sort(key=keys.__getitem__)  # the order the partitions are saved (and so trained) in
    return {keys[run]: job(run, i + 1) for i, run in enumerate(todo)}

"""Training the toy GPT-2 models of the grid from scratch, many at once, deterministically by seed.

A toy model is a Hugging Face ``GPT2LMHeadModel`` (an architecture the study already measures), so a
trained one is wrapped by :func:`ioi_anti.models.loading.wrap_model` and measured by the same code as the
pretrained models. The models of one size train together as one :class:`~ioi_anti.toy.stacked.StackedGPT2`:
each keeps its own initialisation (``torch.manual_seed(seed)``), its own stream of batches drawn from a
corpus pre-generated as tensors (:class:`Corpus`), and its own optimiser state, and gives the same weights
as trained alone. Training is next-token cross-entropy at the trained positions of each sequence, AdamW
with a linear warm-up, then a constant learning rate. Every ``eval_every`` steps each model's top-1 accuracy on held-out
validation prompts is measured (:class:`Validation`). A model *converges* when its accuracies on the kinds
it must learn (:func:`required_kinds`) have reached ``stop_accuracy`` at ``patience`` evaluations in a row;
it goes on for a minority objective (e.g. the 10 % of IOI at λ = 0.1) until that converges too or for
``minority_steps`` more steps, and it stops early when its best accuracy on the kinds it is trained on has
not improved for ``stall_evaluations`` evaluations (stalled). A model that stops leaves the group. Each
model keeps its loss and validation curves and the step it stopped at.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ioi_anti.models.loading import LoadedModel, wrap_model
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import ToyGrid, ToyModels, ToySize, ToyTraining
from ioi_anti.tasks import seed_for
from ioi_anti.toy.language import KINDS, ToyLanguage, encode, mixture
from ioi_anti.toy.stacked import StackedGPT2
from ioi_anti.toy.tasks import KIND_PROMPTS, right_answers, toy_prompts

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

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of sequence it is trained on (IOI-like for λ > 0; list and copy for λ < 1)."""
        return tuple(kind for kind in KINDS if share(self.mix, kind) > 0)


def share(mix: float, kind: str) -> float:
    """The share of a kind's sequences in training at mix λ: λ IOI-like, the rest anti-repetition-like
    (list and copy sequences half and half, one objective)."""
    return mix if kind == "ioi" else 1 - mix


def required_kinds(mix: float, required_share: float) -> tuple[str, ...]:
    """The kinds a model trained at mix λ must learn: those of an objective with a share of at least
    ``required_share`` (training converges on them; a model that misses one falls short)."""
    return tuple(kind for kind in KINDS if share(mix, kind) >= required_share)


def grid(grid: ToyGrid) -> list[ToyRun]:
    """Every model of ``toy_models.grid``: sizes x mixes x seeds, in that order."""
    return [ToyRun(size, mix, seed) for size in grid.sizes for mix in grid.mixes for seed in grid.seeds]


def toy_config(size: ToySize, vocab_size: int) -> GPT2Config:
    """A GPT-2 config of ``size``'s shape without dropout, for the language's vocabulary."""
    return GPT2Config(vocab_size=vocab_size, n_positions=MAX_POSITIONS, n_layer=size.n_layer, n_head=size.n_head,
                      n_embd=size.n_embd, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                      eos_token_id=1)


@dataclass(frozen=True)
class Corpus:
    """Training sequences of every kind, generated once as padded tensors (drawing words in Python at each
    step of each model would cost more than the step), from which each model draws its own batches."""

    ids: Int[Tensor, "n w"]
    trained: Bool[Tensor, "n w-1"]
    lengths: Int[np.ndarray, " n"]
    kind: Int[np.ndarray, " n"]
    size: int  # sequences per kind; kind k holds rows k * size ... (k + 1) * size - 1

    @classmethod
    def generate(cls, language: ToyLanguage, vocab: Mapping[str, int], size: int, seed: int) -> Corpus:
        """``size`` training sequences of each kind (never a held-out combination), from ``seed``."""
        rng = np.random.default_rng(seed_for(seed, "toy_corpus"))
        sequences = [language.training_sequence(rng, kind) for kind in KINDS for _ in range(size)]
        ids, trained = encode(sequences, vocab)
        lengths = np.array([len(s.words) for s in sequences])
        return cls(torch.from_numpy(ids), torch.from_numpy(trained), lengths, np.repeat(np.arange(len(KINDS)), size),
                   size)

    def batch(self, rng: np.random.Generator, n: int, mix: float) -> dict[str, Int[np.ndarray, " k"]]:
        """The rows of one batch per kind: as many of each kind as :func:`~ioi_anti.toy.language.mixture`
        says for mix λ, each drawn uniformly from that kind's sequences."""
        return {kind: KINDS.index(kind) * self.size + (rng.random(count) * self.size).astype(np.int64)
                for kind, count in mixture(n, mix).items() if count}


@dataclass(frozen=True)
class Validation:
    """Held-out validation prompts of each kind (drawn like the measured prompts, from another seed), padded,
    with the position of each prompt's last token and the mask of its right next tokens."""

    ids: dict[str, Int[Tensor, "n w"]]
    last: dict[str, Int[Tensor, " n"]]
    right: dict[str, Bool[Tensor, "n v"]]

    @classmethod
    def from_prompts(cls, tokens: pd.DataFrame, tokenizer: PreTrainedTokenizerFast) -> Validation:
        """The validation set of toy prompts ``tokens`` (as :func:`~ioi_anti.toy.tasks.toy_prompts` makes)."""
        ids, last, right = {}, {}, {}
        for kind, (task, role) in KIND_PROMPTS.items():
            prompts = tokens[(tokens["task"] == task) & (tokens["role"] == role)]
            rows = list(prompts["input_ids"])
            width = max(len(r) for r in rows)
            ids[kind] = torch.tensor([list(r) + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
            last[kind] = torch.tensor([len(r) - 1 for r in rows])
            right[kind] = torch.zeros(len(rows), len(tokenizer), dtype=torch.bool)
            for row, answers in enumerate(right_answers(prompts, tokenizer)):
                right[kind][row, answers] = True
        return cls(ids, last, right)

    def accuracy(self, group: StackedGPT2) -> Float[Tensor, "m kind"]:
        """Every model's top-1 accuracy on each kind's prompts (columns in the order of ``KINDS``)."""
        scores = []
        with torch.no_grad():
            for kind in KINDS:
                ids = self.ids[kind].expand(len(group), -1, -1)
                logits = group.logits(ids)[:, torch.arange(len(ids[0])), self.last[kind]]
                scores.append(self.right[kind].gather(1, logits.argmax(-1).T).float().mean(0))
        return torch.stack(scores, -1)


@dataclass
class Trained:
    """A trained toy model, its curves (per step: loss, loss of each kind; per evaluation: validation
    accuracy of each kind) and whether it reached the stopping accuracy."""

    run: ToyRun
    model: GPT2LMHeadModel
    curves: pd.DataFrame
    converged: bool


def _learning_rate(training: ToyTraining, step: int) -> float:
    """A linear warm-up over ``warmup_steps``, then constant: a model stops when it has learned, not when a
    decay runs out (a decay to 0 at ``steps`` slowed the late learning of copying at mixed λ)."""
    return training.lr * min(1.0, (step + 1) / max(1, training.warmup_steps))


def _optimiser(group: StackedGPT2, training: ToyTraining) -> torch.optim.AdamW:
    # AdamW is elementwise, so one optimiser over the stacked tensors is every model's own optimiser.
    return torch.optim.AdamW(list(group.params.values()), lr=training.lr, weight_decay=training.weight_decay)


def _leave(group: StackedGPT2, optimiser: torch.optim.AdamW, keep: list[int],
           training: ToyTraining) -> tuple[StackedGPT2, torch.optim.AdamW]:
    """The group and its optimiser state without the models that stopped."""
    smaller = group.keep(keep)
    moved = _optimiser(smaller, training)
    picked = torch.tensor(keep)
    for old, new in zip(group.params.values(), smaller.params.values(), strict=True):
        moved.state[new] = {name: value.clone() if name == "step" else value[picked].clone()
                            for name, value in optimiser.state[old].items()}
    return smaller, moved


def train_group(runs: list[ToyRun], corpus: Corpus, validation: Validation, training: ToyTraining,
                vocab_size: int, required_share: float) -> Iterator[Trained]:
    """Train ``runs`` (one size, one λ) together; yield each model when it stops: every kind it is trained on
    converged, ``minority_steps`` after the kinds it must learn converged (a minority objective gets that
    long, so that models trained mostly on one objective can be asked whether they share heads), stalled,
    or at ``steps``. ``converged`` is whether the kinds it must learn converged."""
    if len({(run.size, run.mix) for run in runs}) != 1:
        raise ValueError("A group of toy models trains one size at one λ (their batches hold the same kinds).")
    config = toy_config(runs[0].size, vocab_size)
    models = []
    for run in runs:
        torch.manual_seed(run.seed)
        models.append(GPT2LMHeadModel(config))
    group, active = StackedGPT2.stack(models), list(range(len(runs)))
    optimiser = _optimiser(group, training)
    streams = [np.random.default_rng([run.seed, int(round(run.mix * 1000)), 7]) for run in runs]
    curves: list[list[dict[str, float]]] = [[] for _ in runs]
    streak, best, stalled = [0] * len(runs), torch.zeros(len(runs), len(KINDS)), [0] * len(runs)
    streak_required, required_at = [0] * len(runs), [None] * len(runs)
    needs = torch.tensor([[kind in run.kinds for kind in KINDS] for run in runs])
    must = torch.tensor([[kind in required_kinds(run.mix, required_share) for kind in KINDS] for run in runs])
    progress = tqdm(range(training.steps), desc=f"toy {runs[0].size.name} x{len(runs)}", unit="step", leave=False)
    for step in progress:
        for param_group in optimiser.param_groups:
            param_group["lr"] = _learning_rate(training, step)
        # one pass per kind, each only as wide as its longest sequence (a copy is half again as long as the
        # others): the models of a group share λ, so they draw as many sequences of each kind
        draws = [corpus.batch(streams[i], training.batch_size, runs[i].mix) for i in active]
        sums, counts = [], []
        for kind in draws[0]:
            rows = np.stack([draw[kind] for draw in draws])
            width = int(corpus.lengths[rows].max())
            mask = corpus.trained[rows][..., : width - 1]
            losses = group.token_losses(corpus.ids[rows][..., :width]) * mask
            sums.append(losses.sum((1, 2)))
            counts.append(mask.sum((1, 2)))
        loss = torch.stack(sums).sum(0) / torch.stack(counts).sum(0)
        optimiser.zero_grad()
        loss.sum().backward()  # each model's gradient is its own loss's: the others' do not depend on it
        optimiser.step()
        by_kind = {kind: (total.detach() / count).tolist() for kind, total, count in zip(draws[0], sums, counts,
                                                                                          strict=True)}
        for slot, i in enumerate(active):
            curves[i].append({"step": step, "loss": float(loss[slot].detach()),
                              **{f"loss_{kind}": by_kind[kind][slot] if kind in by_kind else float("nan")
                                 for kind in KINDS}})
        last = step + 1 == training.steps
        if (step + 1) % training.eval_every and not last:
            continue
        accuracy = validation.accuracy(group)
        high = accuracy >= training.stop_accuracy
        reached = (high | ~needs[active]).all(-1).tolist()
        reached_required = (high | ~must[active]).all(-1).tolist()
        stopping = []
        for slot, i in enumerate(active):
            curves[i][-1] |= {f"val_{kind}": float(accuracy[slot, k]) for k, kind in enumerate(KINDS)}
            streak[i] = streak[i] + 1 if reached[slot] else 0
            streak_required[i] = streak_required[i] + 1 if reached_required[slot] else 0
            if required_at[i] is None and streak_required[i] >= training.patience:
                required_at[i] = step + 1
            improved = bool(((accuracy[slot] > best[i]) & needs[i]).any())
            best[i] = torch.maximum(best[i], accuracy[slot])
            stalled[i] = 0 if improved else stalled[i] + 1
            waited = required_at[i] is not None and step + 1 - required_at[i] >= training.minority_steps
            if last or streak[i] >= training.patience or waited or stalled[i] >= training.stall_evaluations:
                stopping.append(slot)
                yield Trained(runs[i], group.model(slot), pd.DataFrame(curves[i]), required_at[i] is not None)
        if stopping:
            keep = [slot for slot in range(len(active)) if slot not in stopping]
            active = [active[slot] for slot in keep]
            if not active:
                return
            group, optimiser = _leave(group, optimiser, keep, training)
            progress.set_description(f"toy {runs[0].size.name} x{len(active)}")


def to_bytes(trained: Trained) -> bytes:
    """A trained model's config, weights, curves and convergence as one file's bytes (``torch.save``)."""
    buffer = io.BytesIO()
    curves = trained.curves
    torch.save({"config": trained.model.config.to_dict(), "state_dict": trained.model.state_dict(),
                "curves": {column: curves[column].tolist() for column in curves.columns},
                "converged": trained.converged}, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes, run: ToyRun) -> Trained:
    """The model of ``run`` saved by :func:`to_bytes` (an error for a damaged file)."""
    saved = torch.load(io.BytesIO(data), weights_only=True)
    model = GPT2LMHeadModel(GPT2Config.from_dict(saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return Trained(run, model.eval(), pd.DataFrame(saved["curves"]), bool(saved["converged"]))


def loaded(run: ToyRun, model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast) -> LoadedModel:
    """A trained toy model wrapped like any model of the study (family gpt2, prompts with BOS)."""
    spec = ModelSpec(model_id=run.model_id, family="gpt2", source="hub", hf_name="gpt2", prepend_bos=True,
                     quantisation="none", licence="trained here (MIT)")
    return wrap_model(spec, model, tokenizer, torch.device("cpu"))


def settings_fingerprint(settings: ToyModels, seed: int) -> str:
    """What a trained model depends on besides its size, mix and seed: the language, the training, the
    prompt settings, the share that makes a kind required (when it converges) and the run's seed (its corpus
    and validation prompts): a hash of their sorted JSON."""
    parts = {"language": settings.language.model_dump(), "training": settings.training.model_dump(),
             "prompts": settings.prompts.model_dump(), "required_share": settings.required_share, "seed": seed}
    return "t" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:11]


def partition_key(settings: ToyModels, run: ToyRun, seed: int) -> str:
    """The partition a trained model is saved under: the settings' fingerprint, then the model id."""
    return f"{settings_fingerprint(settings, seed)}/{run.model_id}"


def is_intact(load: Callable[[], bytes], key: str, run: ToyRun) -> bool:
    """Whether a saved model can be read back (a damaged file is logged and trained again)."""
    try:
        from_bytes(load(), run)
    except Exception as error:  # noqa: BLE001 - any unreadable file is retrained, whatever the reader raises
        logger.warning("Trained toy model %s is damaged (%s): it is trained again.", key, error)
        return False
    return True


class GroupTraining:
    """The lazy training of a group of models of one size: asking for a model trains the group until it
    stops, keeping the models that stopped before it for when they are asked for (so each is saved as soon as its turn
    comes, and an interrupted grid keeps every model saved)."""

    def __init__(self, runs: list[ToyRun], start: Callable[[list[ToyRun]], Iterator[Trained]]) -> None:
        self.runs, self._start = runs, start
        self._training: Iterator[Trained] | None = None
        self._done: dict[ToyRun, bytes] = {}

    def saved(self, run: ToyRun) -> bytes:
        """The file of ``run``, training the group as far as needed."""
        if self._training is None:
            logger.info("Training %d toy model(s) of size %s at λ = %g together.", len(self.runs), run.size.name,
                        run.mix)
            self._training = self._start(self.runs)
        while run not in self._done:
            trained = next(self._training)
            state = "converged" if trained.converged else "did not converge"
            steps = int(trained.curves["step"].max()) + 1
            logger.info("Toy model %s %s at step %d.", trained.run.model_id, state, steps)
            self._done[trained.run] = to_bytes(trained)
        return self._done.pop(run)


def training_jobs(done: dict[str, Callable[[], bytes]], settings: ToyModels,
                  seed: int) -> dict[str, Callable[[], bytes]]:
    """One partition per model of the grid not trained yet with these settings, each trained (with up to
    ``group_size`` models of its size and λ) when it is saved; a re-run trains only the rest."""
    language = ToyLanguage.from_settings(settings.language)
    tokenizer = language.tokenizer()
    keys = {run: partition_key(settings, run, seed) for run in grid(settings.grid)}
    todo = [run for run, key in keys.items() if key not in done or not is_intact(done[key], key, run)]
    if len(todo) < len(keys):
        logger.info("Toy models: %d of %d already trained with these settings; training %d.", len(keys) - len(todo),
                    len(keys), len(todo))
    if not todo:
        return {}
    corpus = Corpus.generate(language, tokenizer.get_vocab(), settings.training.corpus_size, seed)
    validation = Validation.from_prompts(toy_prompts(settings, seed_for(seed, "toy_validation"))[1], tokenizer)

    def start(runs: list[ToyRun]) -> Iterator[Trained]:
        return train_group(runs, corpus, validation, settings.training, len(tokenizer), settings.required_share)

    todo.sort(key=keys.__getitem__)  # the order the partitions are saved in: by size, then λ, then seed
    groups: dict[ToyRun, GroupTraining] = {}
    for size, mix in dict.fromkeys((run.size, run.mix) for run in todo):
        runs = [run for run in todo if (run.size, run.mix) == (size, mix)]
        for first in range(0, len(runs), settings.training.group_size):
            group = GroupTraining(runs[first : first + settings.training.group_size], start)
            groups |= dict.fromkeys(group.runs, group)
    return {keys[run]: (lambda run=run: groups[run].saved(run)) for run in todo}

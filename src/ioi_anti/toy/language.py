"""A synthetic word-level language with IOI-like and anti-repetition-like sequences, for toy models.

Every word is one token of a word-level tokenizer, so the study's tasks, metric and ablations apply
to toy models unchanged. Two kinds of sequence, as in the real datasets:

* **IOI-like**: ``when A and B went to the store , B gave a drink to`` -> ``A``: two names are
  introduced, one is repeated, the next token is the other. ABBA and BABA orders are balanced
  (the indirect object first or second). The ABC reference names a third person as the giver, so
  neither introduced name is the answer.
* **anti-repetition-like**: ``list : apple , pear , plum ,`` -> an item of the category not yet
  listed; its copy counterpart ``copy : apple , pear , plum . copy : apple , pear ,`` -> ``plum``,
  where repeating is right.

Training sequences carry the positions whose next token is trained (the answer of an IOI-like
sequence, every next item of a list, every item of a copy's second half); a training list is one item
longer than the prompts' lists, so that the next item after each prompt's list is trained somewhere.
A fixed share of all combinations (template and names, or category and items) is *held out*: training never draws them,
and the toy tasks' prompts and the accuracy checks draw only them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ioi_anti.params import ToyLanguageSettings

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
IOI_TEMPLATES = (
    "when {a} and {b} went to the {place} , {s} gave a {obj} to",
    "then {a} and {b} had a {obj} at the {place} , {s} handed it to",
)
LIST_PHRASE, COPY_PHRASE = "list : {items} ,", "copy : {items} . copy : {head} ,"
KINDS = ("ioi", "list", "copy")


@dataclass(frozen=True)
class TrainingSequence:
    """Words of one training sequence (BOS first) and the positions whose next word is trained."""

    kind: str
    words: tuple[str, ...]
    trained: tuple[int, ...]


@dataclass(frozen=True)
class ToyLanguage:
    """The vocabulary and the held-out share of the synthetic language (``toy_models.language``)."""

    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]
    list_lengths: tuple[int, ...]
    heldout_share: float

    @classmethod
    def from_settings(cls, settings: ToyLanguageSettings) -> ToyLanguage:
        """The language of ``toy_models.language`` (checked by the settings model: enough distinct words for
        every sequence it makes)."""
        return cls(tuple(settings.names), tuple(settings.places), tuple(settings.objects),
                   {k: tuple(v) for k, v in settings.categories.items()}, tuple(settings.list_lengths),
                   settings.heldout_share)

    @property
    def vocabulary(self) -> list[str]:
        """Special tokens, then every word of the templates and word lists, in a fixed order."""
        template_words = {w for t in (*IOI_TEMPLATES, LIST_PHRASE, COPY_PHRASE) for w in t.split()
                          if not w.startswith("{")}
        words = sorted(template_words | {*self.names, *self.places, *self.objects}
                       | {w for v in self.categories.values() for w in v})
        return [PAD, BOS, UNK, *words]

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """A word-level tokenizer of the language: every word (with or without a leading space) one token."""
        vocab = {word: i for i, word in enumerate(self.vocabulary)}
        core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, pad_token=PAD, unk_token=UNK,
                                            name_or_path="toy-language")
        # Prompts carry their BOS explicitly; saying so keeps TransformerLens from re-loading the tokenizer
        # by name from the Hub to make it add one (as for checkpoints, ioi_anti.models.loading.wrap_model).
        tokenizer.init_kwargs["add_bos_token"] = True
        return tokenizer

    def heldout(self, *key: object) -> bool:
        """Whether a combination (template and names, or category and items) is held out of training."""
        return zlib.crc32(repr(key).encode()) % 10_000 < self.heldout_share * 10_000

    def ioi(self, rng: np.random.Generator, heldout: bool) -> dict[str, Any]:
        """One IOI-like draw from the training or the held-out combinations: template, names, order."""
        while True:
            template = int(rng.integers(len(IOI_TEMPLATES)))
            io, s, c = (str(w) for w in rng.choice(self.names, size=3, replace=False))
            # the pair is held out in both orders: were one order trained, a model could pass training by
            # remembering which name of the pair is the answer, and fail every held-out prompt of that pair
            if self.heldout(template, *sorted((io, s))) == heldout:
                break
        order = "ABBA" if rng.random() < 0.5 else "BABA"
        return {"template": template, "io": io, "s": s, "c": c, "order": order,
                "place": str(rng.choice(self.places)), "obj": str(rng.choice(self.objects))}

    def ioi_text(self, draw: Mapping[str, Any], giver: str) -> str:
        """The IOI-like prompt of a draw, ``giver`` the name that gives (S; a third name in the ABC reference)."""
        a, b = (draw["io"], draw["s"]) if draw["order"] == "ABBA" else (draw["s"], draw["io"])
        return IOI_TEMPLATES[draw["template"]].format(a=a, b=b, s=giver, place=draw["place"], obj=draw["obj"])

    def items(self, rng: np.random.Generator, heldout: bool, length: int) -> tuple[str, list[str]]:
        """One list draw: a category and ``length`` distinct items of it. A held-out draw is a held-out
        combination; a training draw has no held-out combination as a prefix (of a prompt's length), so that
        no prompt's list is ever trained, not even as the start of a longer one."""
        while True:
            category = str(rng.choice(sorted(self.categories)))
            items = [str(w) for w in rng.choice(self.categories[category], size=length, replace=False)]
            if heldout and self.heldout(category, *items):
                return category, items
            if not heldout and not any(self.heldout(category, *items[:n]) for n in self.list_lengths if n <= length):
                return category, items

    def training_sequence(self, rng: np.random.Generator, kind: str) -> TrainingSequence:
        """A training sequence of one kind, never a held-out combination."""
        if kind == "ioi":
            draw = self.ioi(rng, heldout=False)
            words = [BOS, *self.ioi_text(draw, draw["s"]).split(), draw["io"]]
            return TrainingSequence(kind, tuple(words), (len(words) - 2,))
        length = int(rng.choice(self.list_lengths))
        if kind == "list":  # one item longer than a prompt's list: every prompt's next item is trained somewhere
            _category, items = self.items(rng, heldout=False, length=length + 1)
            words = [BOS, *LIST_PHRASE.format(items=" , ".join(items)).split()[:-1]]
            # the comma before every item after the first: there the next item must be a new one
            return TrainingSequence(kind, tuple(words), tuple(i - 1 for i, w in enumerate(words) if w in items[1:]))
        _category, items = self.items(rng, heldout=False, length=length)
        head = " , ".join(items)
        words = [BOS, *COPY_PHRASE.format(items=head, head=head).split()[:-1]]
        second = len(words) - (2 * len(items) - 1)  # where the repeated list starts
        return TrainingSequence(kind, tuple(words), tuple(i - 1 for i in range(second, len(words), 2)))


def mixture(n: int, mix: float) -> dict[str, int]:
    """How many of ``n`` training sequences are of each kind: a share ``mix`` (λ) IOI-like (rounded), the
    rest list and copy sequences half and half (the odd one a list)."""
    ioi = int(round(n * mix))
    copy = (n - ioi) // 2
    return {"ioi": ioi, "list": n - ioi - copy, "copy": copy}


def encode(sequences: Sequence[TrainingSequence], vocab: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest sequence, and the mask of trained positions (their next token)."""
    width = max(len(s.words) for s in sequences)
    ids = np.full((len(sequences), width), vocab[PAD], dtype=np.int64)
    trained = np.zeros((len(sequences), width - 1), dtype=bool)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence.words)] = [vocab[w] for w in sequence.words]
        trained[row, list(sequence.trained)] = True
    return ids, trained

"""The toy language's IOI and anti-repetition tasks, as tasks of :mod:`ioi_anti.tasks`.

Their prompts follow the real tasks' (same metric, same reference, same ablation roles) and draw
only held-out combinations of the language, so a toy model is measured on sequences it never saw.
Both take their settings from ``toy_models`` (``language`` and ``prompts``): their settings model is
that group's, :class:`ioi_anti.params.ToyModels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerFast

from ioi_anti.params import ToyModels
from ioi_anti.tasks import Task, Tokenizers, seed_for
from ioi_anti.tasks.anti import attention_targets as list_targets
from ioi_anti.tasks.ioi import attention_targets as ioi_targets
from ioi_anti.tasks.prompts import check_template_lengths, numbered, tokenise_prompts
from ioi_anti.toy.language import COPY_PHRASE, IOI_TEMPLATES, LIST_PHRASE, ToyLanguage

NO_DROPS = pd.DataFrame(columns=["list", "word", "tokenizer"])  # every toy word is one token by construction
KIND_PROMPTS = {  # the prompts that test each kind of training sequence: (task, role)
    "ioi": ("toy_ioi", "clean"),  # next: the indirect object
    "list": ("toy_anti", "clean"),  # next: an item of the category not yet listed
    "copy": ("toy_anti", "ref"),  # next: the listed item to copy
}


def ioi_prompts(settings: ToyModels, tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IOI-like clean prompts (ABBA and BABA alternating), their ABC references and a mean-ablation pool."""
    language = ToyLanguage.from_settings(settings.language)
    rng = np.random.default_rng(seed_for(seed, "toy_ioi"))
    rows: list[dict[str, Any]] = []
    n_prompts, pool = settings.prompts.n_prompts, settings.prompts.pool_per_template
    for pair in [*range(n_prompts), *([-1] * pool * len(IOI_TEMPLATES))]:
        draw = language.ioi(rng, heldout=True)
        draw["order"] = "ABBA" if (pair if pair >= 0 else len(rows)) % 2 == 0 else "BABA"
        roles = {"clean": draw["s"], "ref": draw["c"]} if pair >= 0 else {"pool": draw["s"]}
        for role, giver in roles.items():
            rows.append({"role": role, "pair_id": pair, "template_id": draw["template"],
                         "template_kind": draw["order"], "text": language.ioi_text(draw, giver),
                         "context_words": [draw["io"], draw["s"]], "metric_words": [draw["io"], draw["s"]],
                         "metric_weights": [1.0, -1.0]})
    return numbered(rows), NO_DROPS.copy()


def anti_prompts(settings: ToyModels, tokenizers: Tokenizers, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List prompts (next: a new item), their copy references (next: the listed last item) and a pool."""
    language = ToyLanguage.from_settings(settings.language)
    rng = np.random.default_rng(seed_for(seed, "toy_anti"))
    rows: list[dict[str, Any]] = []
    lengths = language.list_lengths
    n_prompts, pool = settings.prompts.n_prompts, settings.prompts.pool_per_template
    for pair in [*range(n_prompts), *([-1] * pool * len(lengths))]:
        template = (pair if pair >= 0 else len(rows)) % len(lengths)
        category, items = language.items(rng, heldout=True, length=lengths[template])
        words = list(language.categories[category])
        weights = [-1.0 / len(items) if w in items else 1.0 / (len(words) - len(items)) for w in words]
        texts = {"clean": LIST_PHRASE.format(items=" , ".join(items)),
                 "ref": COPY_PHRASE.format(items=" , ".join(items), head=" , ".join(items[:-1]))}
        for role in ("clean", "ref") if pair >= 0 else ("pool",):
            rows.append({"role": role, "pair_id": pair, "template_id": template, "template_kind": f"len{len(items)}",
                         "text": texts["ref" if role == "ref" else "clean"], "context_words": items,
                         "metric_words": words, "metric_weights": weights, "category": category})
    return numbered(rows), NO_DROPS.copy()


TOY_IOI = Task(name="toy_ioi", label="toy IOI", short="toy IOI", colour="#0072B2", make_prompts=ioi_prompts,
               settings=ToyModels, ablation_roles=("ref", "pool"), attention_targets=ioi_targets,
               description="toy IOI: logit(IO) − logit(S); reference: ABC prompts (held-out names)")
TOY_ANTI = Task(name="toy_anti", label="toy anti-repetition", short="toy anti", colour="#D55E00",
                make_prompts=anti_prompts, settings=ToyModels, ablation_roles=("clean", "pool"),
                attention_targets=list_targets,
                description="toy anti-repetition: mean logit of new items − mean logit of listed items; "
                            "reference: copy prompts (held-out lists)")
TOY_TASKS = (TOY_IOI, TOY_ANTI)


def right_answers(prompts: pd.DataFrame, tokenizer: PreTrainedTokenizerFast) -> list[list[int]]:
    """The right next tokens of each tokenised toy prompt (see :data:`KIND_PROMPTS`): the candidates of positive
    metric weight (the IO; the items not yet listed), or for a copy prompt (``copy : i1 , ... , in . copy :
    i1 , ... ,``) the item before the ``.``."""
    stop = tokenizer.convert_tokens_to_ids(".")
    answers = []
    for role, ids, candidates, weights in zip(prompts["role"], prompts["input_ids"], prompts["metric_token_ids"],
                                              prompts["metric_weights"], strict=True):
        ids = list(ids)
        answers.append([ids[ids.index(stop) - 1]] if role == "ref" else
                       [int(t) for t, w in zip(candidates, weights, strict=True) if w > 0])
    return answers


def toy_prompts(settings: ToyModels, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both toy tasks' prompts (held-out combinations only) and their tokens in the language's tokenizer."""
    language = ToyLanguage.from_settings(settings.language)
    tokenizer = language.tokenizer()
    prompts = pd.concat([task.prompts(settings, {"toy": tokenizer}, seed)[0] for task in TOY_TASKS],
                        ignore_index=True)
    tokens = tokenise_prompts(prompts, tokenizer, prepend_bos=True)
    for task in TOY_TASKS:
        check_template_lengths(tokens, task.name, task.ablation_roles, "toy")
    return prompts, tokens

"""Known results a correct instrument reproduces (Wang et al. 2022, IOI in GPT-2 small).

Needs GPT-2 small from the Hugging Face Hub (or its cache): skipped, with the reason, offline.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest
from base_params import settings

from ioi_anti.measure.sweep import ModelSweep, baseline_table
from ioi_anti.models.loading import load_model, load_tokenizer
from ioi_anti.models.sources import hub_is_cached, hub_is_reachable
from ioi_anti.models.spec import ModelSpec
from ioi_anti.params import DataGeneration, Registry
from ioi_anti.tasks import PAIR, make_task_prompts
from ioi_anti.tasks import prompts as P

RUNTIME = {"device": "auto", "dtype": "float32", "max_batch": 64, "max_rows": 512}


def ioi_head_means(spec: ModelSpec, data_generation: DataGeneration,
                   layers: Sequence[int]) -> tuple[pd.Series, float]:
    """Mean IOI effect of each head of ``layers`` (mean ablation) and the clean IOI metric."""
    tokenizer = load_tokenizer(spec)
    frame, _ = make_task_prompts(PAIR, data_generation, {spec.model_id: tokenizer}, 0)
    tokens = P.tokenise_prompts(frame, tokenizer, spec.prepend_bos)
    sweep = ModelSweep(spec, tokens, RUNTIME, "mean", seed=0)
    effects = pd.concat([sweep.layer_effects(layer) for layer in layers])
    ioi = effects[effects["task"] == "ioi"].groupby(["layer", "head"])["effect"].mean()
    baseline = baseline_table(load_model(spec, RUNTIME["device"], RUNTIME["dtype"]), tokens, 64)
    return ioi, float(baseline.loc[baseline["task"] == "ioi", "m_clean"].mean())


@pytest.mark.hub
def test_gpt2_small_name_movers_and_negative_name_movers(registry: Registry) -> None:
    spec = ModelSpec.from_registry("gpt2", registry)
    if not (hub_is_cached(spec.hf_name) or hub_is_reachable(spec.hf_name, timeout=5.0)):
        pytest.skip("gpt2: Hugging Face Hub unreachable and model not cached")
    data_generation = settings(data_generation__ioi__n_prompts=60).data_generation
    ioi, clean = ioi_head_means(spec, data_generation, layers=[9, 10, 11])
    assert 2.0 < clean < 6.0, "Wang et al. report a clean logit difference of about 3.5"
    most_negative = set(ioi.nsmallest(6).index)
    assert {(9, 9), (9, 6), (10, 0)} <= most_negative, "name movers 9.9, 9.6, 10.0 carry IOI"
    assert ioi[(10, 7)] > 0 and ioi[(11, 10)] > 0, "negative name movers 10.7, 11.10 work against IOI"

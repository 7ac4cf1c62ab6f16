"""The embedded Qwen2.5-Coder-0.5B-Instruct (the `scale` extra): loads offline, does IOI, and the fast
sweep equals the naive reference on its first and last layers."""

from __future__ import annotations

import pandas as pd
import pytest
from test_ablation import _check_fast_against_naive

from ioi_anti.measure.sweep import baseline_table

pytestmark = pytest.mark.integration


def test_qwen_loads_offline_with_its_grid_and_no_bos(qwen, qwen_tokens_by_task) -> None:
    assert type(qwen.bridge.original_model).__name__ == "Qwen2ForCausalLM"
    assert (qwen.n_layers, qwen.n_heads, qwen.d_head) == (24, 14, 64)
    assert qwen.bridge.original_model.config.num_key_value_heads == 2
    assert 4.5e8 < qwen.n_params < 6.5e8
    assert qwen.spec.tuning == "instruct" and qwen.describe()["tuning"] == "instruct"
    clean = qwen_tokens_by_task["ioi"].query("role == 'clean'")
    bos = qwen.tokenizer.bos_token_id
    assert all(ids[0] != bos for ids in clean["input_ids"]), "Qwen's prompts must not start with a BOS token"


def test_qwen_does_both_tasks(qwen, qwen_tokens_by_task) -> None:
    """IOI: IO over S by a wide margin on nearly every clean prompt, and a much smaller margin on the ABC
    references; anti-repetition: new items over listed ones on non-copy prompts, more than on copy prompts."""
    table = baseline_table(qwen, pd.concat(qwen_tokens_by_task.values(), ignore_index=True), max_batch=8)
    ioi, anti = (table[table["task"] == task] for task in ("ioi", "anti"))
    assert ioi["m_clean"].mean() > 3.0 and ioi["correct_clean"].mean() >= 0.9, ioi.describe()
    assert ioi["m_clean"].mean() - ioi["m_ref"].mean() > 3.0
    assert anti["m_clean"].mean() - anti["m_ref"].mean() > 1.0, anti.describe()


def test_qwen_fast_sweep_equals_the_naive_reference_on_first_and_last_layers(qwen, qwen_tokens_by_task) -> None:
    _check_fast_against_naive(qwen, qwen_tokens_by_task, [0, qwen.n_layers - 1])

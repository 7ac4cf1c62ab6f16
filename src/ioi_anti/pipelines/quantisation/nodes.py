"""Nodes of the quantisation pipeline: the toy models quantised to each GGUF type and measured again, the
run's models re-quantised and measured again, both compared with their reference, and the report.

Their settings are typed (:mod:`ioi_anti.params`): Kedro instantiates ``params:quantisation`` as
:class:`~ioi_anti.params.Quantisation` (and the others as their groups' models) before a node runs."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ioi_anti.analysis import quantisation as compare
from ioi_anti.analysis.categories import run_pair
from ioi_anti.execution import Results, run_jobs
from ioi_anti.measure.requantised import Measured, requantised_jobs, requantised_plan, saved_requantised
from ioi_anti.models.sources import check_run_models
from ioi_anti.params import Categorisation, HeadAblation, Quantisation, Registry, Runtime, ToyModels
from ioi_anti.report.quantisation import quantisation_report
from ioi_anti.toy import measure
from ioi_anti.toy.roles import TOY_PAIR, mask_unlearned


def measure_quantised_toy_models(trained: dict[str, Callable[[], bytes]], tokens: pd.DataFrame,
                                 learned: pd.DataFrame, params: ToyModels, quantisation: Quantisation,
                                 runtime: Runtime, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every toy model that learned what it had to, quantised to each of ``toy_types`` and measured again:
    per-head tables, accuracies and the change of every weight tensor."""
    short = set(learned.loc[learned["falls_short"], "model"])
    models = set(learned["model"]) - short
    return measure.measure_quantised(trained, tokens, params, quantisation.toy_types, models, runtime, seed)


def compare_toy_quantisation(reference: pd.DataFrame, quantised: pd.DataFrame, accuracy: pd.DataFrame,
                             quantised_accuracy: pd.DataFrame, learned: pd.DataFrame,
                             params: ToyModels) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per head and type, the float32 and quantised Δ and category; per model and type, the effects
    (:func:`~ioi_anti.analysis.quantisation.model_effects`) with the largest drop of held-out accuracy. A task a
    model has not learned is left out (its Δ NaN, its heads weak), as in the toy roles."""
    reference, quantised = (mask_unlearned(table, learned) for table in (reference, quantised))
    heads = compare.head_changes(reference, quantised, params.tau, TOY_PAIR)
    effects = compare.model_effects(heads, TOY_PAIR)
    return heads, effects.merge(compare.accuracy_changes(accuracy, quantised_accuracy), on=["model", "quantised_to"])


def sweep_requantised(done: dict[str, Callable[[], Measured]], tokenised: dict[str, Callable[[], pd.DataFrame]],
                      tasks: list[str], models: list[str], registry: Registry, runtime: Runtime,
                      params: HeadAblation, categorisation: Categorisation, quantisation: Quantisation,
                      seed: int) -> Results:
    """Every model of ``quantisation.models`` (by default the run's) not measured yet re-quantised to
    ``requantise_to`` (one partition per model); a model this machine cannot load fails before any is measured."""
    models = quantisation.models or models
    check_run_models(models, registry)
    pair = run_pair(tasks, categorisation.pair)
    plan = requantised_plan(tokenised, models, registry, runtime, params, categorisation, pair.names,
                            quantisation.requantise_to, seed)
    return run_jobs(requantised_jobs(done, plan), runtime, "re-quantised sweep")


def compare_requantised(sweeps: dict[str, Callable[[], Measured]], tokenised: dict[str, Callable[[], pd.DataFrame]],
                        reference: pd.DataFrame, tasks: list[str], models: list[str], registry: Registry,
                        runtime: Runtime, params: HeadAblation, categorisation: Categorisation,
                        quantisation: Quantisation, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The run's models against themselves re-quantised: per head (``quant_sensitive``: its category changes),
    per model, and per weight tensor (the change, and what the same type does to the tensor's values afresh);
    the models of ``quantisation.models`` (by default the run's)."""
    models = quantisation.models or models
    pair = run_pair(tasks, categorisation.pair)
    plan = requantised_plan(tokenised, models, registry, runtime, params, categorisation, pair.names,
                            quantisation.requantise_to, seed)
    saved = saved_requantised(sweeps, plan)
    missing = [job.model_id for job in plan.values() if job.model_id not in saved]
    if missing:
        raise KeyError(f"Not measured re-quantised with these settings: {', '.join(missing)}; run "
                       "`kedro run --pipelines quantisation`.")
    heads = compare.head_changes(reference[reference["model"].isin(models)],
                                 pd.concat([s["heads"] for s in saved.values()], ignore_index=True),
                                 categorisation.tau, pair)
    heads["quant_sensitive"] = heads["changed"]
    return heads, compare.model_effects(heads, pair), pd.concat([s["tensors"] for s in saved.values()],
                                                                ignore_index=True)


def write_quantisation_report(toy_effects: pd.DataFrame, toy_tensors: pd.DataFrame, effects: pd.DataFrame,
                              tensors: pd.DataFrame, heads: pd.DataFrame, reference: pd.DataFrame, tasks: list[str],
                              categorisation: Categorisation, quantisation: Quantisation, toy: ToyModels) -> str:
    """The quantisation report (markdown): the shipped weights, the toy ground truth per type, the run's
    models' sensitivity, and a verdict on the study's claims."""
    return quantisation_report(toy_effects, toy_tensors, effects, tensors, heads, reference,
                               run_pair(tasks, categorisation.pair), TOY_PAIR, categorisation.tau, toy.tau,
                               quantisation)

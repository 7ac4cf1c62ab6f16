"""The run's models measured again with their weights re-quantised (docs/metrics.md, "Quantisation"): the
sensitivity of every head's Δ and category to a second quantisation of the same size as the shipped one.

One job per model: load it outside the model cache, quantise its weights (:func:`load_quantised`), and
sweep its heads on the pair's tasks with the run's own ablation settings and sweep mode: every head exactly,
or in a ``screen`` run (``--env scale``) the heads the re-quantised model's own attribution estimates select,
by the same rule as the reference sweep, so the two are measured alike. Each job's result (the
per-head table and the change of every weight tensor) is saved as one partition as soon as it is done, under
a key that fingerprints the prompts and settings, so an interrupted run measures only the models left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ioi_anti.execution import Job
from ioi_anti.measure.head_table import model_head_table
from ioi_anti.measure.partitions import fingerprint, model_tokens
from ioi_anti.measure.plan import partition_settings, screen_rule
from ioi_anti.measure.sweep import ModelSweep, Screen, baseline_table, heads_in_layer, task_gaps
from ioi_anti.models.loading import load_quantised
from ioi_anti.models.spec import ModelSpec, resolve_models
from ioi_anti.params import Categorisation, HeadAblation, Registry, Runtime
from ioi_anti.tasks import load_task

logger = logging.getLogger(__name__)

Measured = dict[str, pd.DataFrame]  # "heads": the per-head table; "tensors": the change of every weight tensor


def measure_requantised(spec: ModelSpec, tokens: pd.DataFrame, tasks: Sequence[str], runtime: Runtime,
                        params: HeadAblation, screen: Screen | None, kind: str, seed: int) -> Measured:
    """One model's per-head table on ``tasks`` with its weights quantised to GGUF type ``kind`` (every head
    measured exactly, or with ``screen`` the heads its attribution estimates select), and the change made to
    each weight tensor."""
    lm, tensors = load_quantised(spec, runtime, kind, seed)
    baseline = baseline_table(lm, tokens, runtime.max_batch)
    sweep = ModelSweep(spec, tokens, runtime, params.ablation, params.seed, lm=lm,
                       screening=None if screen is None else (task_gaps(baseline), screen),
                       roles={task: load_task(task).ablation_roles for task in tasks})
    selection = sweep.selection
    layers = tqdm(range(lm.n_layers), desc=f"{spec.model_id} re-quantised to {kind}", unit="layer", leave=False)
    long = pd.concat([sweep.attribution, *(sweep.layer_effects(layer, None if selection is None else
                                                                 heads_in_layer(selection, layer))
                                           for layer in layers)], ignore_index=True)
    table = model_head_table(long, baseline, list(tasks), params.n_boot, params.ci, seed, selection,
                             unit=params.delta)
    mode = "exact" if screen is None else "screen"
    return {"heads": table.assign(ablation=params.ablation, mode=mode, quantised_to=kind),
            "tensors": tensors.assign(model=spec.model_id, quantisation=spec.quantisation, quantised_to=kind)}


def read_intact(load: Callable[[], Measured], key: str) -> Measured | None:
    """A saved partition's two tables, or None if it does not read back as both (logged: measured again)."""
    try:
        saved = load()
    except Exception as error:  # noqa: BLE001 - any unreadable file is measured again, whatever the reader raises
        logger.warning("Saved partition %s is damaged (%s): measuring it again.", key, error)
        return None
    if isinstance(saved, dict) and all(isinstance(saved.get(k), pd.DataFrame) for k in ("heads", "tensors")):
        return saved
    logger.warning("Saved partition %s is damaged (not the per-head and tensor tables): measuring it again.", key)
    return None


def requantised_key(spec: ModelSpec, tokens: pd.DataFrame, runtime: Runtime, params: HeadAblation,
                    screen: Screen | None, kind: str, seed: int) -> str:
    """``<model>/<kind>-<fingerprint of its prompts and of every setting that can change a number>``."""
    settings = partition_settings(runtime, params, screen) | {"n_boot": params.n_boot, "ci": params.ci,
                                                            "delta": params.delta, "seed": seed}
    return f"{spec.model_id}/{kind}-{fingerprint(spec.model_id, tokens, settings)}"


def requantised_plan(tokenised: dict[str, Callable[[], pd.DataFrame]], models: list[str], registry: Registry,
                     runtime: Runtime, params: HeadAblation, categorisation: Categorisation, tasks: Sequence[str],
                     kind: str, seed: int) -> dict[str, Job]:
    """Per model of the run, the key of its partition and the job that measures it, in the run's sweep mode
    (whether this machine can load the model is checked where jobs are run:
    :func:`ioi_anti.models.sources.check_run_models`)."""
    screen = screen_rule(params, categorisation)
    plan = {}
    for spec in resolve_models(models, registry):
        prompts = model_tokens(tokenised, spec.model_id)
        tokens = prompts[prompts["task"].isin(tasks)]
        key = requantised_key(spec, tokens, runtime, params, screen, kind, seed)
        plan[key] = Job(spec.model_id, measure_requantised,
                        (spec, tokens, tuple(tasks), runtime, params, screen, kind, seed))
    return plan


def requantised_jobs(done: dict[str, Callable[[], Measured]], plan: dict[str, Job]) -> dict[str, Job]:
    """The jobs of ``plan`` not measured yet (or whose saved partition is damaged)."""
    todo = {}
    for key, job in plan.items():
        if key in done and read_intact(done[key], key) is not None:
            logger.info("%s re-quantised: already measured (%s): skipped.", job.model_id, key)
        else:
            todo[key] = job
    return todo


def saved_requantised(done: dict[str, Callable[[], Measured]], plan: dict[str, Job]) -> dict[str, Measured]:
    """Per model of ``plan`` measured re-quantised with exactly these prompts and settings (and intact), its
    saved tables; models not measured so are left out."""
    saved = {job.model_id: read_intact(done[key], key) for key, job in plan.items() if key in done}
    return {model: tables for model, tables in saved.items() if tables is not None}

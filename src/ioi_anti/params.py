"""The run's settings, typed: one pydantic model per parameter group of ``conf/base/parameters*.yml``.

Node functions annotate their ``params:<group>`` inputs with these models, so Kedro's own parameter
validation (``kedro.validation``) instantiates them before a node runs, and the library receives typed
objects whose fields say what each function reads. The models carry no defaults: ``conf/base`` is the
single source of every value, and an environment overrides it key by key. Each field's description is
what the setting must be; :mod:`ioi_anti.run.validation` quotes it when a value is wrong, listing every
problem of a run at once before any work starts. This module imports nothing of the package, so every
layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationInfo, field_validator, model_validator

Precision = Literal["float32", "bfloat16", "float16"]
Ablation = Literal["mean", "zero", "resample"]
Mode = Literal["exact", "screen"]
DeltaUnit = Literal["normalised", "raw"]
Family = Literal["gpt2", "gpt-neo", "opt", "pythia", "llama", "gemma", "qwen2"]
Source = Literal["hub", "gguf"]
Tuning = Literal["base", "instruct"]  # pretrained only, or instruction-tuned after pretraining
GgufType = Literal["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]  # the block types the `gguf` package quantises in Python
PRECISIONS: tuple[str, ...] = get_args(Precision)
ABLATIONS: tuple[str, ...] = get_args(Ablation)
MODES: tuple[str, ...] = get_args(Mode)
DELTA_UNITS: tuple[str, ...] = get_args(DeltaUnit)
FAMILIES: tuple[str, ...] = get_args(Family)
SOURCES: tuple[str, ...] = get_args(Source)
TUNINGS: tuple[str, ...] = get_args(Tuning)
GGUF_TYPES: tuple[str, ...] = get_args(GgufType)
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def need(what: str, **constraints: Any) -> Any:
    """A field whose description says what the setting must be (quoted in the settings error)."""
    return Field(description=what, **constraints)


def one_of(values: tuple[str, ...], why: str = "") -> str:
    return f"one of {', '.join(values)}" + (f" ({why})" if why else "")


Count = Annotated[int, need("an integer >= 1", ge=1)]
Size = Annotated[int, need("an integer >= 0", ge=0)]
Seed = Annotated[int, need("an integer >= 0", ge=0)]
Fraction = Annotated[float, need("strictly between 0 and 1", gt=0, lt=1)]
Tau = Annotated[float, need("strictly between 0 and 1", gt=0, lt=1)]
Names = Annotated[int, need("an integer >= 3 (a prompt and its reference need three different names)", ge=3)]


class Settings(BaseModel):
    """A parameter group: every key required, none unknown, no value coerced from another type, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Runtime(Settings):
    """``runtime``: where and how models run."""

    device: Annotated[str, need("auto, cpu, cuda, cuda:<index> or mps", pattern=f"^({DEVICE_PATTERN})$")]
    dtype: Annotated[Precision, need(one_of(PRECISIONS, "half types: mixed precision, docs/metrics.md"))]
    tf32: Annotated[bool, need("true or false")]
    max_batch: Count
    max_rows: Count
    keep_loaded_gb: Annotated[float, need("a number of GB >= 0", ge=0)]
    cluster: Annotated[str | None, need("unset (null), `local` or a scheduler address such as tcp://host:8786")]
    workers: Annotated[int, need("an integer >= 1 (CPU workers of a local cluster)", ge=1)]


class Chunks(Settings):
    """A GGUF file split over chunk packages (templates over the chunk number), with its size and SHA-256."""

    package: str
    file: str
    count: Count
    size: Count
    sha256: Annotated[str, need("64 hex digits", pattern=r"^[0-9a-fA-F]{64}$")]


class RegistryEntry(Settings):
    """One model of ``model_registry``: family, where its weights come from (a GGUF model names its file and the
    package(s) that carry it), how they are stored (``quantisation``) and under which licence."""

    family: Annotated[Family, need(one_of(FAMILIES, "the architectures whose fast sweep is tested against the naive "
                                             "reference; another needs a tiny model of its own first: docs/models.md"))]
    source: Annotated[Source, need(one_of(SOURCES))]
    hf_name: Annotated[str, need("the model's Hugging Face name", min_length=1)]
    prepend_bos: Annotated[bool, need("true or false: whether the model's prompts start with BOS (its "
                                      "tokenizer config says; Gemma's IOI collapses without it)")]
    tuning: Annotated[Tuning, need(one_of(TUNINGS))] = "base"
    quantisation: Annotated[str, need("how the weights are stored: `none` for a Hub model's float weights, else the "
                                      "GGUF file's type (Q4_1, Q4_K_M, Q8_0, F16, ...), checked against the file "
                                      "when it loads", pattern=r"^(none|[A-Z0-9_]+)$")]
    licence: Annotated[str, need("the licence of the weights, e.g. Apache-2.0 (shown beside every result)",
                                 min_length=1)]
    package: str | None = None
    gguf_file: str | None = None
    chunks: Chunks | None = None
    install: str | None = None

    @model_validator(mode="after")
    def _gguf_has_a_file(self) -> RegistryEntry:
        if self.source == "gguf" and not (self.gguf_file and (self.package or self.chunks)):
            raise ValueError("a gguf model needs `gguf_file`, and `package` or `chunks`")
        if (self.source == "gguf") == (self.quantisation == "none"):
            raise ValueError("`quantisation` is `none` for a Hub model (float weights) and the GGUF file's type "
                             "(e.g. Q4_K_M) for a gguf model")
        return self


class Registry(RootModel[dict[str, RegistryEntry]]):
    """``model_registry``: model id -> its entry."""

    model_config = ConfigDict(strict=True, frozen=True)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.root

    def __getitem__(self, model_id: str) -> RegistryEntry:
        return self.root[model_id]

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # the model ids, as a dict iterates its keys
        return iter(self.root)


class Categorisation(Settings):
    """``categorisation``: the pair of tasks whose roles make the categories, τ and the correlation intervals."""

    pair: Annotated[list[str], need("two task names of `tasks` (checked against the run's tasks)")]
    tau: Tau
    sensitivity_taus: Annotated[list[Tau], need("a non-empty list of τ values strictly between 0 and 1",
                                                min_length=1)]
    n_boot: Count
    ci_level: Fraction
    n_depth_bins: Count

    @property
    def taus(self) -> list[float]:
        """Every τ of the run, ascending: the default one and the sensitivity ones."""
        return sorted({self.tau, *self.sensitivity_taus})


class ScreenSettings(Settings):
    """``head_ablation.screen``: which heads an attribution screen sends to exact measurement."""

    margin: Annotated[float, need("a number >= 0", ge=0)]
    top_k: Size


class HeadAblation(Settings):
    """``head_ablation``: how each head is ablated and measured."""

    ablation: Annotated[Ablation, need(one_of(ABLATIONS))]
    seed: Seed
    delta: Annotated[DeltaUnit, need(one_of(DELTA_UNITS))]
    mode: Annotated[Mode, need(one_of(MODES))]
    n_boot: Count
    ci: Fraction
    screen: ScreenSettings

    @field_validator("mode")
    @classmethod
    def _raw_is_exact(cls, mode: Mode, info: ValidationInfo) -> Mode:
        if mode == "screen" and info.data.get("delta") == "raw":
            raise ValueError("must be 'exact' with `head_ablation.delta` = 'raw' (raw Δ needs `head_ablation.mode` = "
                             "'exact': screening's margin and τ are fractions of the task gap)")
        return mode


class Verdict(Settings):
    """``hero_heads.verdict``: how a hero's effect on a task is named from its decomposition."""

    main_share: Annotated[float, need("in (0, 1]", gt=0, le=1)]
    min_share: Annotated[float, need("in (0, main_share]", gt=0, le=1)]

    @field_validator("min_share")
    @classmethod
    def _min_below_main(cls, min_share: float, info: ValidationInfo) -> float:
        if min_share > info.data.get("main_share", 1.0):
            raise ValueError("must be in (0, main_share]")
        return min_share


class HeroHeads(Settings):
    """``hero_heads``: which heads are studied as heroes, and how."""

    top_per_category: Size
    named: Annotated[dict[str, list[str]], need("model ids mapped to lists of heads, e.g. {gpt2-large: [L34H2]}")]
    max_prompts: Count
    n_boot: Count
    dose_steps: Annotated[int, need("an integer >= 2 (clean and ablated)", ge=2)]
    topk_max: Size
    receivers: Annotated[Literal["strong", "all"], need("strong or all")]
    max_receivers: Size
    verdict: Verdict


class Published(Settings):
    """``published``: the audit of the study's published tables and the run beside them."""

    top_k: Count
    tau: Tau
    names: dict[str, str]


class Reporting(Settings):
    """``reporting``: figure layout and where the figures go."""

    fig_width_in: Annotated[float, need("a width in inches > 0", gt=0)]
    font_size: Annotated[float, need("a size in pt >= 8 (readable at paper size)", ge=8)]
    panel_height_in: Annotated[float, need("a height in inches > 0", gt=0)]
    output_dir: str


class DataGeneration(Settings):
    """``data_generation``: the prompt seed, and one section per task (typed by the task itself:
    :attr:`ioi_anti.tasks.Task.settings`)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    seed: Seed

    def section(self, task: str) -> dict[str, Any]:
        """The raw section of ``task`` (empty when it has none); the task validates it into its own model."""
        return dict((self.model_extra or {}).get(task) or {})


class ToyLanguageSettings(Settings):
    """``toy_models.language``: the synthetic word-level language (every word one token, with one meaning)."""

    names: Annotated[list[str], need("a list of at least 3 names (the ABC reference names a third)", min_length=3)]
    places: list[str]
    objects: list[str]
    categories: Annotated[dict[str, list[str]], need("category names mapped to lists of items", min_length=1)]
    list_lengths: Annotated[list[int], need("a non-empty list of lengths >= 2, each below the smallest category",
                                            min_length=1)]
    heldout_share: Annotated[float, need("strictly between 0 and 0.5 (most combinations are trained)", gt=0, lt=0.5)]

    @field_validator("list_lengths")
    @classmethod
    def _a_new_item_is_left(cls, lengths: list[int], info: ValidationInfo) -> list[int]:
        categories = info.data.get("categories")  # absent when it was wrong itself (reported on its own)
        shortest = min(len(items) for items in categories.values()) if categories else None
        if min(lengths) < 2 or (shortest is not None and max(lengths) >= shortest):
            known = f" ({shortest} items)" if shortest is not None else ""
            raise ValueError(f"must be >= 2 each and below the smallest category{known}, so that a new item is left")
        return lengths

    @model_validator(mode="after")
    def _one_meaning_per_word(self) -> ToyLanguageSettings:
        words = [*self.names, *self.places, *self.objects, *(w for items in self.categories.values() for w in items)]
        repeated = sorted({w for w in words if words.count(w) > 1})
        if repeated:
            raise ValueError(f"the words {repeated} appear twice in names, places, objects and categories; every "
                             "word needs one meaning")
        return self


class ToySize(Settings):
    """One toy model shape (GPT-2 style)."""

    name: str
    n_layer: Count
    n_head: Count
    n_embd: Count


class ToyGrid(Settings):
    """``toy_models.grid``: the models trained (every size x λ x seed)."""

    mixes: Annotated[list[float], need("a non-empty list of λ in [0, 1]", min_length=1)]
    seeds: Annotated[list[Seed], need("a non-empty list of integers >= 0", min_length=1)]
    sizes: Annotated[list[ToySize], need("a non-empty list of sizes with distinct names", min_length=1)]

    @field_validator("mixes")
    @classmethod
    def _shares(cls, mixes: list[float]) -> list[float]:
        if not all(0 <= mix <= 1 for mix in mixes):
            raise ValueError("must be a non-empty list of λ in [0, 1]")
        return mixes

    @field_validator("sizes")
    @classmethod
    def _distinct_names(cls, sizes: list[ToySize]) -> list[ToySize]:
        if len({size.name for size in sizes}) != len(sizes):
            raise ValueError("must be sizes with distinct names (a name is part of each model's id)")
        return sizes


class ToyTraining(Settings):
    """``toy_models.training``: the optimiser, its budget and when a model stops."""

    steps: Count
    batch_size: Count
    lr: Annotated[float, need("a learning rate > 0", gt=0)]
    warmup_steps: Size
    weight_decay: Annotated[float, need("a number >= 0", ge=0)]
    corpus_size: Count
    eval_every: Count
    stop_accuracy: Annotated[float, need("an accuracy in (0, 1]", gt=0, le=1)]
    patience: Count
    stall_evaluations: Count
    minority_steps: Size
    group_size: Count


class ToyPrompts(Settings):
    """``toy_models.prompts``: the held-out prompts each toy model is measured on."""

    n_prompts: Count
    pool_per_template: Size


class ToyMeasure(Settings):
    """``toy_models.measure``: the head sweep of each toy model."""

    ablation: Annotated[Ablation, need(one_of(ABLATIONS))]
    n_boot: Count
    ci: Fraction


class ToyModels(Settings):
    """``toy_models``: the controlled experiment on small models trained from scratch."""

    language: ToyLanguageSettings
    grid: ToyGrid
    training: ToyTraining
    prompts: ToyPrompts
    measure: ToyMeasure
    tau: Tau
    learned_accuracy: Annotated[float, need("an accuracy in (0, 1]", gt=0, le=1)]
    required_share: Fraction


class Quantisation(Settings):
    """``quantisation``: what quantised weights do to the study's measurements (docs/metrics.md, "Quantisation")."""

    toy_types: Annotated[list[Annotated[GgufType, need(one_of(GGUF_TYPES))]],
                         need(f"a non-empty list of GGUF types ({one_of(GGUF_TYPES)})", min_length=1)]
    requantise_to: Annotated[GgufType, need(one_of(GGUF_TYPES, "the scheme the shipped models are re-quantised with"))]
    models: Annotated[list[str] | None, need("null (every model of the run) or a non-empty list of the run's "
                                             "model ids", min_length=1)]


class Baseline(Settings):
    """``baseline``: the intervals of each model's clean behaviour."""

    n_boot: Count


class RunSettings(Settings):
    """Every parameter of a run (the top level of ``conf/base/parameters*.yml``)."""

    models: Annotated[list[str], need("a non-empty list of model ids from `model_registry`", min_length=1)]
    tasks: Annotated[list[str], need("a list of at least two task names", min_length=2)]
    seed: Seed
    runtime: Runtime
    model_registry: Registry
    categorisation: Categorisation
    data_generation: DataGeneration
    baseline: Baseline
    head_ablation: HeadAblation
    hero_heads: HeroHeads
    published: Published
    reporting: Reporting
    toy_models: ToyModels
    quantisation: Quantisation

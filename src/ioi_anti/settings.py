"""Project settings (Kedro defaults, a deep merge of parameters across environments, the run hooks)."""

from kedro.config import OmegaConfigLoader

from ioi_anti.pipeline_registry import stage_outputs
from ioi_anti.run.hooks import ClusterLifetime, RunGuard
from ioi_anti.run.validation import CONFIG_LOADER_ARGS  # noqa: F401 - read by Kedro: base, local, a soft merge

# Settings checked before any work, one run at a time, and no run's results mixed with another's;
# a Dask cluster the run started is closed when it ends.
HOOKS = (RunGuard(stage_outputs), ClusterLifetime())

CONFIG_LOADER_CLASS = OmegaConfigLoader

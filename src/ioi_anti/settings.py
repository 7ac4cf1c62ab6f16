"""Project settings (Kedro defaults, a deep merge of parameters across environments, the run hooks)."""

from kedro.config import OmegaConfigLoader

from ioi_anti.run.hooks import ClusterLifetime, RunGuard

# Settings checked before any work, one run at a time, and no run's results mixed with another's;
# a Dask cluster the run started is closed when it ends.
HOOKS = (RunGuard(), ClusterLifetime())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--env paper` overrides single keys (the model list, prompt counts) of nested parameters.
    "merge_strategy": {"parameters": "soft"},
}

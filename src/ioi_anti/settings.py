"""Project settings (Kedro defaults, a deep merge of parameters across environments, the run guard)."""

from kedro.config import OmegaConfigLoader

from ioi_anti.hooks import RunGuard

# Settings checked before any work, one run at a time, and no run's results mixed with another's.
HOOKS = (RunGuard(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--env paper` overrides single keys (the model list, prompt counts) of nested parameters.
    "merge_strategy": {"parameters": "soft"},
}

"""Project settings (Kedro defaults, plus a deep merge of parameters across environments)."""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--env paper` overrides single keys (the model list, prompt counts) of nested parameters.
    "merge_strategy": {"parameters": "soft"},
}

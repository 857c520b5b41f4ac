"""Stratos: distil a teacher LLM into a small student for one task, under constraints, and deploy it."""

import os

# Stratos must work with no network: make the libraries it drives stay offline
# and silent unless the user has said otherwise. This runs before any of them is
# imported because flows/, tasks/ and blocks/ import this package first.
_OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # a hub id otherwise spends ~46 s in retries before failing
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Stratos logs its own progress (steps, loss, ETA); per-file/per-shard bars from the
    # hub, transformers and datasets only bury it in pipeline logs.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
for _key, _value in _OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"

"""Stratos: distil a teacher LLM into a small student for one task, under constraints, and deploy it."""

import os

from stratos.threads import apply_threads

# Stratos must work with no network: make the libraries it drives stay offline
# and silent unless the user has said otherwise. This runs before any of them is
# imported because flows/, tasks/ and blocks/ import this package first.
_OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # a hub id otherwise spends ~46 s in retries before failing
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect 3.8.8's V2 UI starts Amplitude (a hard-coded key) on every page load and fetches its
    # config from sr-client-cfg.amplitude.com whatever the analytics setting; the setting only
    # silences the events. The V1 UI makes no outside request: serve it by default.
    "PREFECT_SERVER_UI_V2_ENABLED": "false",
    # Stratos' own progress lines (synthesis, training steps, evaluation, zoo builds) in the run logs
    # of the Prefect UI, not only on the terminal (stratos.progress).
    "PREFECT_LOGGING_EXTRA_LOGGERS": "stratos,tasks,flows",
    # Prefect's temporary server (tests, a bare `distill()` call) gets 20 s to start; on a busy
    # 2-core machine its imports and migrations alone took longer (measured here).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Stratos logs its own progress (steps, loss, ETA); per-file/per-shard bars from the
    # hub, transformers and datasets only bury it in pipeline logs.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
for _key, _value in _OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

# Torch's thread count: STRATOS_THREADS, else OMP_NUM_THREADS, else the idle cores (stratos/threads.py).
# Set here, before torch is imported by any stage, so every entry point (CLI, flows, benchmarks, the
# serving process) follows the same rule.
THREADS = apply_threads()

__version__ = "0.1.0"

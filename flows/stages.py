"""The GPU stages as JSON-in, JSON-out functions, and the small flow a worker runs them in.

Synthesis, training, evaluation and serving need the chosen server's GPUs, so
the main flow may run them on a Prefect worker there (flows/dispatch.py). To
travel through `run_deployment`, a stage takes only JSON-able arguments (spec
sections as dicts, artifact URIs, content hashes) and returns a JSON-able dict.
It reads its inputs from the artifact store by URI, works in a local work
directory named by its cache key (so a retried stage on the same machine
resumes from its checkpoints), and publishes what it made back to the store.

`stage_flow` is the deployment entry point: it runs one stage by name and
writes the result to the store, where the parent flow reads it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

import stratos  # noqa: F401  (offline environment defaults before any library import)
from stratos.files import content_digest
from stratos.spec import ModelCandidate, StrategySettings, TaskSpec, TrainingSettings
from stratos.storage import from_uri, stratos_home

log = logging.getLogger(__name__)


def work_dir(stage: str, key: str) -> Path:
    """The local directory a stage works in; the same key finds the same directory after a crash."""
    path = stratos_home() / "work" / stage / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def where() -> dict[str, Any]:
    """Which machine and process ran a stage (tests check a worker ran it)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _domain(task: dict[str, Any]):
    from stratos.domains import get_domain

    return get_domain(TaskSpec.model_validate(task))


def _backend(candidate: dict[str, Any]):
    """The candidate's backend; a model given as an artifact URI (a trained student) is fetched first."""
    from stratos.backends.factory import from_candidate
    from stratos.storage import fetch

    model = candidate["model"]
    if model.startswith(("file://", "s3://")):
        candidate = {**candidate, "model": str(fetch(model))}
    return from_candidate(ModelCandidate.model_validate(candidate))


def synthesize_stage(store_uri: str, key: str, task: dict[str, Any], teacher: dict[str, Any],
                     train_uri: str, mode: str, strategy: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Teacher writes the training set in `mode`; published as synthesis/<key>/ (train.parquet + logs)."""
    from stratos.storage import fetch
    from tasks.prepare_data import load_examples
    from tasks.synthesize import synthesize

    s = StrategySettings.model_validate(strategy)
    out = work_dir("synthesize", key)
    report = synthesize(_backend(teacher), _domain(task), load_examples(fetch(train_uri)), mode, out,  # type: ignore[arg-type]
                        s.num_samples, s.max_attempts, s.temperature, s.max_new_tokens, seed=0)  # fmt: skip
    if report.accepted == 0:
        raise ValueError(
            f"synthesis kept no training example ({report.verdicts}); the teacher '{teacher['name']}' "
            "never produced a verified answer. Raise strategy.max_attempts or num_samples, or use a stronger teacher"
        )
    art = from_uri(store_uri).put_dir(f"synthesis/{key}", out)
    return {"uri": art.uri, "train_sha256": content_digest(out / "train.parquet"), "report": report.to_dict(),
            "where": where()}  # fmt: skip


def train_stage(store_uri: str, key: str, task: dict[str, Any], base_model: str, synthesis_uri: str,
                training: dict[str, Any], method: str, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Fine-tune the student on the synthesized set; resumes from checkpoints; publishes models/<key>/."""
    from stratos.storage import fetch
    from tasks.train import train_student

    out = work_dir("train", key)
    data = fetch(synthesis_uri) / "train.parquet"
    result = train_student(base_model, data, _domain(task), TrainingSettings.model_validate(training), out,
                           method=method, seed=seed, callbacks=[_progress_callback()])  # fmt: skip
    store = from_uri(store_uri)
    model = store.put_dir(f"models/{key}/model", result.model_dir)
    adapter = store.put_dir(f"models/{key}/adapter", result.adapter_dir) if result.adapter_dir else None
    meta = store.put_file(f"models/{key}/meta.json", out / "meta.json")
    return {"model_uri": model.uri, "model_sha256": content_digest(result.model_dir),
            "adapter_uri": adapter.uri if adapter else None, "meta_uri": meta.uri,
            "result": result.to_dict(), "where": where()}  # fmt: skip


def evaluate_stage(store_uri: str, key: str, task: dict[str, Any], model: dict[str, Any], test_uri: str,
                   max_new_tokens: int) -> dict[str, Any]:  # fmt: skip
    """Greedy accuracy and latency of one model on the held-out split; published as evaluations/<key>.json."""
    from stratos.backends.base import SamplingParams
    from stratos.storage import fetch
    from tasks.evaluate import evaluate
    from tasks.prepare_data import load_examples

    result = evaluate(_backend(model), _domain(task), load_examples(fetch(test_uri)),
                      SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))  # fmt: skip
    art = from_uri(store_uri).put_json(f"evaluations/{key}.json", result.to_dict())
    return {"uri": art.uri, "accuracy": result.accuracy, "n": result.n, "where": where()}


def deploy_stage(store_uri: str, key: str, task: dict[str, Any], model_uri: str, model_sha256: str,
                 served_model_name: str, server_id: str, test_uri: str, evaluation_uri: str,
                 deploy: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:  # fmt: skip
    """Serve the student, check health, smoke and parity, and record the endpoint (tasks/deploy.py).

    Parity compares the served model with the evaluation stage on the same questions: the first
    `deploy.parity_size` the evaluation scored, at the evaluation's accuracy on exactly those.
    """
    import json

    from stratos.spec import DeploySettings
    from stratos.storage import fetch
    from tasks.deploy import deploy_model, parity_sample, serving_backend
    from tasks.evaluate import EvalResult
    from tasks.prepare_data import load_examples

    settings = DeploySettings.model_validate(deploy)
    evaluation = EvalResult.from_dict(json.loads(fetch(evaluation_uri).read_text()))
    examples, expected = parity_sample(evaluation, load_examples(fetch(test_uri)), settings.parity_size)
    record = deploy_model(
        fetch(model_uri), domain=_domain(task), parity_examples=examples, expected_accuracy=expected,
        served_model_name=served_model_name, server_id=server_id, model_uri=model_uri,
        model_sha256=model_sha256, backend=serving_backend(settings.backend), tolerance=settings.parity_tolerance,
        max_new_tokens=max_new_tokens, host=settings.host, port=settings.port,
        startup_timeout_s=settings.startup_timeout_s, gpu_memory_utilization=settings.gpu_memory_utilization,
    )  # fmt: skip
    data = record.model_dump(mode="json")
    from_uri(store_uri).put_json(f"endpoints/{key}.json", data)
    return {"endpoint": data, "where": where()}


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "synthesize": synthesize_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
    "deploy": deploy_stage,
}


def result_key(stage: str, key: str) -> str:
    return f"stage-results/{stage}/{key}.json"


# log_prints stays off: it turns print() into log records even when a library has swapped
# sys.stdout to capture output (dill.detect does, to read `dis` listings while `datasets` hashes
# functions), which floods the run log with bytecode and hides what the library wanted to read.
@flow(name="stratos-stage")
def stage_flow(stage: str, args: dict[str, Any]) -> str:
    """Run one GPU stage on this worker and store its result; returns the result's URI."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; one of {', '.join(STAGES)}")
    result = STAGES[stage](**args)
    return from_uri(args["store_uri"]).put_json(result_key(stage, args["key"]), result).uri


def _progress_callback():
    """A TrainerCallback that mirrors training progress into a Prefect progress artifact."""
    from transformers import TrainerCallback

    class PrefectProgress(TrainerCallback):
        def __init__(self):
            self.artifact = None

        def on_step_end(self, args, state, control, **kwargs):
            from prefect.artifacts import create_progress_artifact, update_progress_artifact
            from prefect.context import FlowRunContext, TaskRunContext

            if not (FlowRunContext.get() or TaskRunContext.get()) or not state.max_steps:
                return
            if state.global_step % max(1, state.max_steps // 20) and state.global_step != state.max_steps:
                return
            percent = 100.0 * state.global_step / state.max_steps
            try:
                if self.artifact is None:
                    self.artifact = create_progress_artifact(percent, key="training-progress",
                                                             description="student training steps")  # fmt: skip
                else:
                    update_progress_artifact(self.artifact, percent)
            except Exception as err:  # progress is nice to have; never fail training over it
                log.debug("progress artifact not updated: %s", err)

    return PrefectProgress()

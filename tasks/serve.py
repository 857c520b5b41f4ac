"""Stage 10, serve: the student behind an OpenAI-compatible endpoint, proven to answer as evaluated.

One code path for both serving engines:
    start (detached process, log file) -> wait healthy -> smoke test -> parity -> record endpoint

    cpu   stratos.serving.openai_server (FastAPI over the HF backend) from this environment
    vllm  `vllm serve` from its own environment or image (vLLM cannot share Prefect's; see
          ENVIRONMENT.md): the executable comes from the argument or $STRATOS_VLLM

Checks before an endpoint is reported:
    health  GET /health answers and /v1/models lists the served name, within startup_timeout_s;
            else the error carries the server's log tail
    smoke   one real chat completion through the official `openai` client
    parity  accuracy on a sample of the test split, through the same evaluate() the evaluation
            stage used, equals the evaluation's accuracy on the same examples within `tolerance`;
            a mismatch (wrong chat template, bad merge, wrong adapter) blocks the deployment

Any failure stops the server before raising, so a failed deploy leaves nothing running.

The server outlives the flow run that started it; its record (stratos.serving.endpoints,
`$STRATOS_HOME/endpoints/<id>.json`) is what `stratos endpoints` and `stratos stop ENDPOINT`
find it by, and what lets a re-run reuse a healthy endpoint for the same weights
(`find_running`) instead of paying for a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
from prefect import task
from pydantic import BaseModel, Field

from stratos.backends.base import SamplingParams
from stratos.backends.openai_http import BackendError, OpenAIBackend
from stratos.domains import get_domain
from stratos.domains.base import Domain, Example
from stratos.evaluation import EvalResult, Match, evaluate
from stratos.files import dir_digest
from stratos.jobs import Ran, Runner, StageJob, dispatched, transient
from stratos.ledger import Budget, Entry
from stratos.serving.endpoints import (
    CHILDREN,
    EndpointNotFoundError,
    EndpointRecord,
    Parity,
    ServingBackend,
    Smoke,
    find_running,
    free_port,
    launch,
    list_endpoints,
    local_url,
    log_tail,
    pid_alive,
    record_path,
    stop_endpoint,
    terminate,
    write_record,
)
from stratos.spec import ServeSettings, TaskSpec
from stratos.storage import fetch, from_uri
from tasks.prepare_data import SplitFile, load_split

# The registry functions are re-exported: the flow and the CLI use this stage's module only.
__all__ = [
    "ServeError",
    "EndpointNotFoundError",
    "EndpointRecord",
    "Parity",
    "Smoke",
    "cpu_command",
    "ServeJob",
    "Served",
    "VllmOptions",
    "run_serving",
    "serve",
    "serve_student",
    "find_running",
    "find_vllm",
    "serving_backend",
    "list_endpoints",
    "model_dir_sha256",
    "parity_sample",
    "stop_endpoint",
    "vllm_command",
]

VLLM_ENV = "STRATOS_VLLM"  # path to a `vllm` executable in its own venv or image
# Start-up timeouts when serve.startup_timeout_s is empty: a CPU server loads a small model in
# seconds; vLLM loads weights, profiles memory and captures CUDA graphs.
CPU_STARTUP_S, VLLM_STARTUP_S = 120.0, 900.0


class ServeError(RuntimeError):
    """A deployment that failed a check; the message names the check, what was seen and the fix."""


# --- launch commands ---------------------------------------------------------------------------


def cpu_command(model_dir: str | Path, served_model_name: str, host: str, port: int) -> list[str]:
    """The FastAPI server of this package, run with this interpreter."""
    return [
        sys.executable,
        "-m",
        "stratos.serving.openai_server",
        "--model",
        str(model_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        served_model_name,
    ]


def vllm_command(
    model_dir: str | Path,
    served_model_name: str,
    host: str,
    port: int,
    executable: str,
    max_model_len: int | None,
    gpu_memory_utilization: float,
    lora_adapter: str | Path | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """`vllm serve` for a merged model, or for a base model plus a LoRA adapter served under the name.

    With an adapter, clients ask for `served_model_name` (the LoRA module) and the base model
    answers as `<name>-base`; vLLM refuses adapters above --max-lora-rank (default 16), so the
    adapter's rank is passed on.
    """
    cmd = [executable, "serve", str(model_dir), "--host", host, "--port", str(port)]
    if lora_adapter is None:
        cmd += ["--served-model-name", served_model_name]
    else:
        rank = json.loads((Path(lora_adapter) / "adapter_config.json").read_text()).get("r", 16)
        cmd += ["--served-model-name", f"{served_model_name}-base", "--enable-lora"]
        cmd += ["--lora-modules", f"{served_model_name}={lora_adapter}", "--max-lora-rank", str(rank)]
    if max_model_len is not None:
        cmd += ["--max-model-len", str(max_model_len)]
    cmd += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    return cmd + list(extra_args)


def find_vllm(executable: str | None = None) -> str:
    """The vllm executable from the argument or $STRATOS_VLLM, checked to exist."""
    exe = executable or os.environ.get(VLLM_ENV)
    if not exe:
        raise ValueError(
            f"backend='vllm' needs the vllm executable: pass vllm_executable or set {VLLM_ENV} "
            "(e.g. /opt/vllm/bin/vllm in the GPU worker image); vLLM cannot live in Stratos' own venv"
        )
    if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
        raise ValueError(f"vllm executable '{exe}' does not exist or is not executable; fix {VLLM_ENV}")
    return exe


def serving_backend(choice: str) -> ServingBackend:
    """deploy.backend resolved: 'auto' is vLLM where a GPU and a vllm executable are present, else the CPU server."""
    if choice != "auto":
        return choice  # type: ignore[return-value]
    import torch

    return "vllm" if torch.cuda.is_available() and os.environ.get(VLLM_ENV) else "cpu"


# --- the stage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmOptions:
    """What only `vllm serve` takes: its executable (else $STRATOS_VLLM), context length, a LoRA adapter
    to serve on the base model instead of the merged weights, and extra command-line arguments."""

    executable: str | None = None
    max_model_len: int | None = None
    lora_adapter: str | Path | None = None
    extra_args: Sequence[str] = ()


def serve_student(
    model_dir: str | Path,
    *,
    domain: Domain,
    parity_examples: list[Example],
    expected_accuracy: float,
    served_model_name: str,
    server_id: str,
    settings: ServeSettings | None = None,
    vllm: VllmOptions | None = None,
    model_uri: str | None = None,
    model_sha256: str | None = None,
    max_new_tokens: int = 256,
    match: Match = "flexible",
    reuse: bool = True,
    registry: str | Path | None = None,
) -> EndpointRecord:
    """Serve `model_dir`, check health, smoke and parity, and record the endpoint.

    Args:
        parity_examples: test examples the evaluation stage scored (see `parity_sample`).
        expected_accuracy: the evaluation's accuracy on exactly those examples.
        settings: the spec's serve section (backend, host, port, tolerance, start-up timeout, GPU share).
        max_new_tokens, match: must equal the evaluation's, or truncated or differently read answers
            look like a parity failure.
        reuse: return an already running, healthy endpoint for the same weights and name.
    Returns:
        The endpoint record (also written to the registry). Raises ServeError on a failed check.
    """
    settings, vllm = settings or ServeSettings(), vllm or VllmOptions()
    backend = serving_backend(settings.backend)
    model_dir = Path(model_dir)
    _check_inputs(model_dir, parity_examples, expected_accuracy, backend, vllm.lora_adapter)
    if model_sha256 is None:  # the adapter is part of what is served, so part of its identity
        parts = [model_dir_sha256(model_dir)] + (
            [model_dir_sha256(vllm.lora_adapter)] if vllm.lora_adapter else []
        )
        model_sha256 = parts[0] if len(parts) == 1 else hashlib.sha256("".join(parts).encode()).hexdigest()
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    tolerance = settings.parity_tolerance
    if reuse and (found := find_running(model_sha256, served_model_name, registry, backend)):
        return _reuse(found, domain, parity_examples, expected_accuracy, tolerance, params, registry, match)

    host, port = settings.host, settings.port or free_port(settings.host)
    if backend == "vllm":
        cmd = vllm_command(
            model_dir,
            served_model_name,
            host,
            port,
            find_vllm(vllm.executable),
            vllm.max_model_len,
            settings.gpu_memory_utilization,
            vllm.lora_adapter,
            vllm.extra_args,
        )
    else:
        cmd = cpu_command(model_dir, served_model_name, host, port)
    timeout = settings.startup_timeout_s or (VLLM_STARTUP_S if backend == "vllm" else CPU_STARTUP_S)
    record = launch(
        cmd,
        served_model_name,
        host,
        port,
        backend,
        registry,
        model_uri=model_uri or model_dir.resolve().as_uri(),
        model_sha256=model_sha256,
        server_id=server_id,
    )
    try:
        record.startup_s = wait_healthy(record, timeout)
        record.smoke = smoke_test(
            record.url, served_model_name, domain.messages(parity_examples[0].question), max_new_tokens
        )
        record.parity = check_parity(
            record.url,
            served_model_name,
            domain,
            parity_examples,
            expected_accuracy,
            tolerance,
            params,
            match,
        )
    except BaseException:
        terminate(record.pid, record.port)
        record_path(record.id, registry).unlink(missing_ok=True)
        raise
    record.status = "ready"
    write_record(record, registry)
    return record


def _check_inputs(
    model_dir: Path,
    examples: list[Example],
    expected: float,
    backend: str,
    lora_adapter: str | Path | None,
) -> None:
    """Fail before starting anything on inputs no server could fix."""
    if not (model_dir / "config.json").is_file():
        raise ValueError(
            f"model_dir '{model_dir}' has no config.json; pass the training stage's model/ directory"
        )
    if backend not in ("cpu", "vllm"):
        raise ValueError(f"backend '{backend}' is not one of 'cpu', 'vllm'")
    if not examples:
        raise ValueError("parity_examples is empty; pass a sample of the test split the evaluation scored")
    if not 0 <= expected <= 1:
        raise ValueError(f"expected_accuracy={expected}: a fraction, e.g. 0.82")
    if lora_adapter is not None and backend != "vllm":
        raise ValueError(
            f"lora_adapter '{lora_adapter}' needs backend='vllm'; on the CPU path serve the merged model/ dir"
        )
    if lora_adapter is not None and not (Path(lora_adapter) / "adapter_config.json").is_file():
        raise ValueError(f"lora_adapter '{lora_adapter}' has no adapter_config.json; pass the adapter/ dir")


def _reuse(
    record: EndpointRecord,
    domain: Domain,
    examples: list[Example],
    expected: float,
    tolerance: float,
    params: SamplingParams,
    registry: str | Path | None,
    match: Match = "flexible",
) -> EndpointRecord:
    """A running endpoint for the same weights: smoke it again; re-check parity only if the target moved.

    An endpoint that fails now is stopped like a fresh one would be: no failed deployment stays up.
    """
    try:
        record.smoke = smoke_test(
            record.url, record.served_model_name, domain.messages(examples[0].question), params.max_new_tokens
        )
        old = record.parity
        if old is None or abs(old.served_accuracy - expected) > tolerance or old.n != len(examples):
            record.parity = check_parity(
                record.url, record.served_model_name, domain, examples, expected, tolerance, params, match
            )
    except BaseException:
        stop_endpoint(record.id, registry)
        raise
    write_record(record, registry)
    return record


def parity_sample(result: EvalResult, examples: list[Example], n: int) -> tuple[list[Example], float]:
    """The first `n` of `examples` that the evaluation scored, and its accuracy on exactly those.

    Parity compares like with like: the evaluation's accuracy on the whole split would differ from
    a small sample's by sampling noise alone.
    """
    correct = {r.id: r.correct for r in result.records}
    sample = [ex for ex in examples if ex.id in correct][:n]
    if not sample:
        raise ValueError(
            f"none of the {len(examples)} examples was scored by the evaluation of '{result.backend}'; "
            "pass the same test split the evaluation stage used"
        )
    return sample, sum(correct[ex.id] for ex in sample) / len(sample)


def model_dir_sha256(model_dir: str | Path) -> str:
    """Content hash of a model directory: the same stratos.files.dir_digest the flow keys its stages on."""
    return dir_digest(model_dir)


# --- checks --------------------------------------------------------------------------------------


def wait_healthy(record: EndpointRecord, timeout_s: float) -> float:
    """Seconds until /health answers and /v1/models lists the served name; ServeError with the log tail if not."""
    root = local_url(record).removesuffix("/v1")
    started = time.monotonic()
    while True:
        if not pid_alive(record.pid):
            code = CHILDREN[record.pid].returncode if record.pid in CHILDREN else "unknown"
            raise ServeError(
                f"{record.backend} server for '{record.served_model_name}' exited with code {code} before "
                f"becoming healthy; fix the cause in its log ({record.log_path}):\n{log_tail(record.log_path)}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                models = httpx.get(f"{root}/v1/models", timeout=5).json()
                names = [m.get("id") for m in models.get("data", [])]
                if record.served_model_name not in names:
                    raise ServeError(
                        f"server at {record.url} is up but serves {names}, not '{record.served_model_name}'"
                    )
                return round(time.monotonic() - started, 2)
        if time.monotonic() - started > timeout_s:
            raise ServeError(
                f"{record.backend} server for '{record.served_model_name}' was not healthy at {root}/health "
                f"after {timeout_s:.0f}s; raise startup_timeout_s if the model is large, else fix the "
                f"cause in its log ({record.log_path}):\n{log_tail(record.log_path)}"
            )
        time.sleep(0.25)


def smoke_test(url: str, served_model_name: str, messages: list[dict[str, str]], max_tokens: int) -> Smoke:
    """One real chat completion through the official `openai` client."""
    import openai

    # An explicit placeholder key: otherwise the client would send $OPENAI_API_KEY to this server.
    client = openai.OpenAI(base_url=url, api_key="stratos-local", timeout=120.0, max_retries=1)
    began = time.perf_counter()
    try:
        reply = client.chat.completions.create(
            model=served_model_name, messages=messages, max_tokens=max_tokens, temperature=0.0
        )
    except openai.OpenAIError as exc:
        raise ServeError(f"smoke test against {url} failed: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    text = reply.choices[0].message.content if reply.choices else None
    if not text:
        raise ServeError(
            f"smoke test against {url}: model '{served_model_name}' returned an empty completion; "
            "check the chat template and the end-of-sequence token of the served model"
        )
    tokens = reply.usage.completion_tokens if reply.usage else 0
    return Smoke(text=text[:200], completion_tokens=tokens, latency_s=round(time.perf_counter() - began, 3))


def check_parity(
    url: str,
    served_model_name: str,
    domain: Domain,
    examples: list[Example],
    expected_accuracy: float,
    tolerance: float,
    params: SamplingParams,
    match: Match = "flexible",
) -> Parity:
    """Score the served model with evaluate() under the evaluation's reading; ServeError when it differs."""
    client = OpenAIBackend(url, served_model_name, max_concurrency=8, timeout_s=300.0, max_retries=2)
    try:
        result = evaluate(client, domain, examples, params, match=match)
    except BackendError as exc:
        raise ServeError(f"parity check against {url} could not run: {exc}") from None
    finally:
        client.close()
    parity = Parity(
        served_accuracy=result.accuracy,
        expected_accuracy=expected_accuracy,
        n=result.n,
        tolerance=tolerance,
        seconds=round(result.seconds, 2),
    )
    if abs(result.accuracy - expected_accuracy) > tolerance:
        wrong = next((r for r in result.records if not r.correct), None)
        example = f"\nfirst wrong answer ({wrong.id}): {wrong.completion[:160]!r}" if wrong else ""
        raise ServeError(
            f"parity check failed for '{served_model_name}' at {url}: served accuracy "
            f"{result.accuracy:.3f} ({result.correct}/{result.n}) vs {expected_accuracy:.3f} in evaluation "
            f"(tolerance {tolerance}). The endpoint does not answer as the evaluated model did; likely "
            "causes: a different chat template in the served model dir (chat_template.jinja or tokenizer_config.json), a bad LoRA merge or "
            "the wrong adapter, another dtype/quantisation, or max_new_tokens "
            f"({params.max_new_tokens}) below the evaluation's.{example}"
        )
    return parity


# --- the stage -----------------------------------------------------------------------------------


class ServeJob(StageJob):
    stage: ClassVar[str] = "serve"

    budget: Budget | None = None
    task: TaskSpec
    model_uri: str
    model_sha256: str
    served_model_name: str
    server_id: str
    test: SplitFile
    evaluation_uri: str = Field(
        description="The student's evaluation: parity compares the served model with it."
    )
    serve: ServeSettings
    max_new_tokens: int


class Served(BaseModel):
    endpoint: EndpointRecord
    where: Ran  # which machine and process ran it


def run_serving(job: ServeJob) -> Served:
    """Serve the student, check health, smoke and parity, and record the endpoint.

    Parity compares the served model with the evaluation stage on the same questions: the first
    `serve.parity_size` the evaluation scored, at the evaluation's accuracy on exactly those, read
    the way the evaluation read them.
    """
    evaluation = EvalResult.from_dict(json.loads(fetch(job.evaluation_uri).read_text()))
    examples, expected = parity_sample(evaluation, load_split(job.test), job.serve.parity_size)
    record = serve_student(
        fetch(job.model_uri),
        domain=get_domain(job.task),
        parity_examples=examples,
        expected_accuracy=expected,
        served_model_name=job.served_model_name,
        server_id=job.server_id,
        settings=job.serve,
        model_uri=job.model_uri,
        model_sha256=job.model_sha256,
        max_new_tokens=job.max_new_tokens,
        match=evaluation.match,
    )
    from_uri(job.store_uri).put_json(f"endpoints/{job.key}.json", record.model_dump(mode="json"))
    if job.budget is not None:  # start-up and checks; the endpoint then runs on at the server's hourly price
        seconds = (record.startup_s or 0.0) + (record.parity.seconds if record.parity else 0.0)
        entry = Entry(
            id=f"serving:{record.id}",
            stage="serving",
            item=f"start-up, smoke and parity of {record.id}",
            usd=job.budget.gpu_usd(seconds),
            basis=job.budget.gpu_basis,
            note=job.budget.gpu_note() + "; serving continues at that rate until stopped",
            seconds=seconds,
        )
        job.budget.ledger().charge(entry)
    return Served(endpoint=record, where=Ran.here())


@task(
    name="serve",
    task_run_name="serve",
    cache_policy=dispatched(run_serving),
    persist_result=True,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=transient,
)
def serve(job: ServeJob, runner: Runner) -> Served:
    """Serve the student where the runner places it; the flow re-runs it when the cached endpoint is gone."""
    return runner.run(run_serving, job)

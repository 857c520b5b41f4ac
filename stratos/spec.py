"""DistillSpec: the one input of a Stratos run, validated once, before any expensive work.

Every field carries a description (it becomes the Prefect UI form) and the
cross-field rules live in validators here, not in task bodies. Sections that
later stages fill in (teachers, students, strategy, training, relax) are named
now so the spec grows without being reshaped.
"""

from __future__ import annotations

import difflib
import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stratos.catalog import region_coordinates
from stratos.data import CATALOG_DIR
from stratos.files import read_utf8
from stratos.form import field_title, form_schema

BUILTIN_CATALOG = "builtin"
SELECTION_METHODS = ("pfg", "cost_first", "hardware_first", "random", "weighted_sum")
# Caps on the counts that drive loops: far above any real run, low enough that a typo
# (1e9 questions, a million samples per question) fails in a second instead of hanging for hours.
MAX_ROWS = 1_000_000  # questions per split
MAX_SAMPLES = 1_000  # teacher samples or attempts per question
MAX_TOKENS = 1 << 20  # generation caps and sequence lengths
MAX_EPOCHS = 10_000
MAX_BATCH = 1 << 16


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, the bad value and the fix."""


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: reject them. No number of a run is
    # meaningful as inf or NaN (YAML's .inf, .nan): reject those in every float field.
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        allow_inf_nan=False,
        field_title_generator=field_title,
        json_schema_extra=form_schema,
    )


class TaskSpec(_Section):
    """What the student must learn to do."""

    model_config = ConfigDict(title="Task")

    domain: Literal["gsm8k", "mahjong", "arithmetic", "custom"] = Field(
        "arithmetic", description="Built-in domain, or 'custom' for a user dataset file."
    )
    dataset: str | None = Field(
        None,
        description="Dataset file (JSONL/CSV/Parquet) or a `datasets` directory saved to disk. "
        "Required for 'custom'; optional for gsm8k (defaults to the vendored slice).",
    )
    question_column: str = Field("question", description="Column holding the question text (custom).")
    answer_column: str = Field("answer", description="Column holding the gold answer (custom).")
    scorer: str = Field(
        "exact",
        description="How answers are compared for 'custom': exact, numeric, set, or a dotted path "
        "'package.module:function' taking (prediction, gold) and returning a bool.",
    )
    answer_match: Literal["flexible", "strict"] = Field(
        "flexible",
        description="How model output is read when scoring: 'strict' counts only a final '#### <answer>' "
        "line (the format Stratos trains); 'flexible' also reads 'The answer is X', 'Answer: X', \\boxed{X}, "
        "a bold final value and the last number (or the tiles of the last line), as evaluation harnesses do. "
        "Both are reported; this one drives teacher and student selection.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Domain knobs, e.g. mahjong {hand_size: 7, suits: 1} or arithmetic {digits: 2}.",
    )
    train_size: int = Field(2000, gt=0, le=MAX_ROWS, description="Training questions to draw.")
    probe_size: int = Field(
        100, gt=0, le=MAX_ROWS, description="Probe questions for teacher selection and pre-screening."
    )
    test_size: int = Field(200, gt=0, le=MAX_ROWS, description="Held-out questions for evaluation.")
    seed: int = Field(0, description="Seed for splits and generated datasets.")

    @model_validator(mode="after")
    def _custom_needs_dataset(self) -> TaskSpec:
        if self.domain == "custom" and not self.dataset:
            raise ValueError(
                "domain 'custom' needs a dataset; set task.dataset to a JSONL, CSV or Parquet file"
            )
        return self


class Constraints(_Section):
    """The user's hard limits; every stage checks against them."""

    model_config = ConfigDict(title="Constraints")

    min_accuracy: float = Field(
        0.0, ge=0, le=1, description="Minimum held-out accuracy of the student (0-1)."
    )
    max_latency_ms: float = Field(
        1000.0,
        gt=0,
        description="Maximum per-request latency in ms. A server whose network round trip to the "
        "user's region alone exceeds it is infeasible.",
    )
    budget_usd: float = Field(
        100.0,
        gt=0,
        description="Total budget for the whole job (synthesis, training, evaluation, the first serving hours), USD.",
    )
    max_hourly_usd: float | None = Field(
        None,
        gt=0,
        title="Max hourly price (USD)",
        description="Maximum hosting price in USD per hour; none means no cap.",
    )
    region: str = Field(
        "us-east",
        description="Where the user's traffic comes from: a region alias (us-east, eu-west, asia-east, ...), "
        "a cloud region from the catalogs, a city ('Frankfurt, DE'), or 'lat,lon'.",
    )
    min_gpu_memory_gb: float | None = Field(
        None,
        ge=0,
        description="Total GPU memory the server needs. Leave empty to derive it from the models.",
    )

    max_student_params: int | None = Field(
        None,
        gt=0,
        description="Largest student (parameters) to consider; none means any size. The relax step "
        "'larger_student' raises it to admit the next larger candidate.",
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region_coordinates(value)  # raises a ValueError that names the known regions
        return value


class JobEstimateSettings(_Section):
    """Assumptions of the job estimate (stratos.job_cost); each triple is (lowest, planned, highest)."""

    model_config = ConfigDict(title="Job estimate")

    mfu: tuple[float, float, float] = Field(
        (0.1, 0.25, 0.4),
        description="Training model-FLOPs utilisation: the share of one GPU's peak dense bf16 FLOPS that "
        "training reaches, as (lowest, planned, highest). HF Trainer on small models reaches 10-40%; the "
        "lowest gives the high end of the cost range.",
    )
    generation_efficiency: tuple[float, float, float] = Field(
        (0.1, 0.3, 0.8),
        description="Share of the batched roofline (80% of memory bandwidth per decode step) that local "
        "generation reaches, as (lowest, planned, highest); about 1 for a vLLM-class engine, far less for "
        "padded Hugging Face generate.",
    )
    stage_overhead_s: tuple[float, float, float] = Field(
        (0.0, 120.0, 600.0),
        description="Seconds each GPU stage (local synthesis, training, evaluation) spends loading models and "
        "writing checkpoints, as (least, planned, most).",
    )
    chars_per_token: float = Field(
        4.0,
        gt=0,
        description="Characters per token used to count prompt and answer tokens when no local tokenizer is "
        "at hand (English text through a BPE tokenizer: about 4).",
    )
    serve_hours: float = Field(
        1.0,
        ge=0,
        description="Hours of serving the student counted in the job (the first N hours on the chosen server).",
    )

    @field_validator("mfu", "generation_efficiency")
    @classmethod
    def _shares_ordered(cls, value: tuple[float, float, float], info) -> tuple[float, float, float]:
        if not 0 < value[0] <= value[1] <= value[2] <= 1:
            raise ValueError(
                f"{info.field_name} must be three shares 0 < lowest <= planned <= highest <= 1, got "
                f"{list(value)}; e.g. [0.1, 0.25, 0.4]"
            )
        return value

    @field_validator("stage_overhead_s")
    @classmethod
    def _overhead_ordered(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not 0 <= value[0] <= value[1] <= value[2]:
            raise ValueError(
                f"stage_overhead_s must be three seconds 0 <= least <= planned <= most, got {list(value)}; "
                "e.g. [0, 120, 600]"
            )
        return value


class ServerSettings(_Section):
    """Where candidate servers come from and how one is chosen (Pareto Front Grid)."""

    model_config = ConfigDict(title="Servers")

    catalogs: list[str] = Field(
        default_factory=lambda: [BUILTIN_CATALOG],
        description="Catalog files (SkyPilot CSV columns, as CSV or YAML), or 'builtin' for the "
        "shipped multi-cloud catalogs (Lambda, RunPod, Cudo, Nebius).",
    )
    grid_k: int = Field(10, ge=1, le=100, description="Pareto Front Grid cells per objective (K; K^3 cells).")
    sigma: float = Field(0.01, gt=0, lt=0.5, description="Grid margin σ: cell width r = (1 + 2σ) / K.")
    method: Literal["pfg", "cost_first", "hardware_first", "random", "weighted_sum"] = Field(
        "pfg", description="Selection method; the others are the baselines PFG is compared with."
    )
    hardware_metric: Literal["tflops", "gpu_memory"] = Field(
        "tflops", description="Hardware objective H: total peak bf16 TFLOPS, or total GPU memory (GB)."
    )
    use_spot: bool = Field(
        False, description="Price servers at their spot price; rows without one are dropped."
    )
    planned_hours: float | None = Field(
        None,
        gt=0,
        description="GPU hours the run is expected to need; a server whose price times this exceeds the "
        "budget is infeasible. Empty: each server's estimated job cost (stratos.job_cost) must fit the "
        "budget instead.",
    )
    cost_objective: Literal["hourly", "job"] = Field(
        "job",
        description="PFG's cost axis: 'hourly' is the server's $/h; 'job' is the estimated cost of the whole "
        "job on that server (synthesis, training, evaluation, the first serving hours), so a faster, "
        "pricier GPU that finishes sooner can win.",
    )
    job_estimate: JobEstimateSettings = Field(
        default_factory=JobEstimateSettings,
        description="Assumptions of the per-server job estimate (throughput shares, overheads, serving hours).",
    )
    weights: tuple[float, float, float] = Field(
        (1 / 3, 1 / 3, 1 / 3),
        description="Weights (hardware, cost, latency) for the weighted-sum baseline and the score.",
    )
    seed: int = Field(0, description="Seed of the random baseline.")

    @field_validator("catalogs")
    @classmethod
    def _catalogs_exist(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("no catalog given; use ['builtin'] or paths to catalog files")
        for entry in value:
            path = Path(entry).expanduser()
            if entry == BUILTIN_CATALOG:
                continue
            if not path.exists():
                raise ValueError(f"catalog file '{entry}' does not exist; give a CSV/YAML path or 'builtin'")
            if not path.is_file():
                raise ValueError(
                    f"catalog '{entry}' is a directory, not a file; give the CSV/YAML file inside it "
                    "(e.g. its vms.csv) or 'builtin'"
                )
            if path.stat().st_size == 0:
                raise ValueError(
                    f"catalog file '{entry}' is empty (0 bytes); give a CSV with SkyPilot's columns "
                    "InstanceType, AcceleratorName, AcceleratorCount, Price, Region, or 'builtin'"
                )
        return value

    @field_validator("weights")
    @classmethod
    def _weights_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or not 0 < sum(value) < float("inf"):
            raise ValueError(
                "weights must be non-negative, not all zero and of finite sum, e.g. [0.34, 0.33, 0.33]"
            )
        return value

    def catalog_paths(self) -> list[Path]:
        """The catalog files, with 'builtin' expanded to the shipped ones."""
        paths: list[Path] = []
        for entry in self.catalogs:
            if entry == BUILTIN_CATALOG:
                paths += sorted(p for p in CATALOG_DIR.glob("*.csv") if p.name != "accelerators.csv")
            else:
                paths.append(Path(entry).expanduser())
        return paths


class ModelCandidate(_Section):
    """A teacher or student candidate."""

    model_config = ConfigDict(title="Model")

    name: str = Field(description="Short name used in reports.")
    kind: Literal["hf", "openai", "stored"] = Field(
        "hf",
        description="hf: local path or hub id; openai: an OpenAI-compatible endpoint; stored: a JSONL of completions.",
    )
    model: str = Field(
        description="Hub id or local path (hf), served model name (openai), or JSONL path (stored)."
    )
    base_url: str | None = Field(None, description="Endpoint URL for kind 'openai'.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (never logged)."
    )
    price_per_1k_input: float = Field(0.0, ge=0, description="USD per 1k prompt tokens (openai).")
    price_per_1k_output: float = Field(0.0, ge=0, description="USD per 1k completion tokens (openai).")

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ModelCandidate:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"model '{self.name}' has kind 'openai' but no base_url; set base_url")
        return self


class StrategySettings(_Section):
    """Dual-mode synthesis: Knowledge Alignment or Knowledge Injection."""

    model_config = ConfigDict(title="Strategy")

    tau: float = Field(
        0.5, ge=0, le=1, description="Teacher probe accuracy at or above τ → alignment, else injection."
    )
    force_mode: Literal["alignment", "injection"] | None = Field(
        None, description="Force a mode (ablations)."
    )
    num_samples: int = Field(4, ge=1, le=MAX_SAMPLES, description="Teacher samples per training question.")
    max_attempts: int = Field(
        8, ge=1, le=MAX_SAMPLES, description="Injection: generation attempts per question before giving up."
    )
    temperature: float = Field(0.8, ge=0, description="Teacher sampling temperature during synthesis.")
    prescreen_size: int = Field(
        32, gt=0, le=MAX_ROWS, description="Questions in the student capacity pre-screen."
    )
    prescreen_threshold: float = Field(
        0.0, ge=0, le=1, description="Minimum pre-screen accuracy a student must reach."
    )
    prescreen_demos: int = Field(
        3,
        ge=0,
        le=MAX_SAMPLES,
        description="Teacher-written worked examples in the few-shot pre-screen prompt.",
    )
    max_new_tokens: int = Field(
        256, ge=1, le=MAX_TOKENS, description="Generation cap for teacher and student completions."
    )


class TrainingSettings(_Section):
    """How the student is trained."""

    model_config = ConfigDict(title="Training")

    method: Literal["auto", "lora", "full", "grpo"] = Field(
        "auto", description="auto: full fine-tuning for small/random students, LoRA-SFT otherwise."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(3.0, gt=0, le=MAX_EPOCHS, description="Epochs over the synthesized data.")
    per_device_train_batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="Batch size per device.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    num_generations: int = Field(8, ge=2, le=MAX_BATCH, description="GRPO group size.")
    beta: float = Field(0.0, ge=0, description="GRPO KL coefficient.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps.")
    max_seq_length: int = Field(256, ge=16, le=MAX_TOKENS, description="Maximum tokens per training example.")
    bf16: bool | None = Field(
        None,
        description="bf16 mixed precision. Empty: on where it is native (a bf16 GPU; a CPU with AVX512_BF16 "
        "or AMX, as CPU autocast), float32 elsewhere. true forces it (emulated, and slower, on other CPUs).",
    )
    activation_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: less memory for "
        "about a third more compute per step. Off (TRL's trainers default to on): turn it on only when a "
        "large student does not fit in GPU memory.",
    )


class RelaxStep(_Section):
    """One bounded relaxation tried when nothing is feasible."""

    model_config = ConfigDict(title="Relax step")

    action: Literal["larger_student", "larger_server", "higher_budget", "higher_hourly_cap"] = Field(
        description="What to relax."
    )
    factor: float = Field(
        1.5, gt=1, le=100, description="Multiplier for budget/hourly cap/server memory steps."
    )


class RelaxPolicy(_Section):
    """The constraint-violation loop: relaxations tried in order, each logged."""

    model_config = ConfigDict(title="Relax")

    steps: list[RelaxStep] = Field(
        default_factory=list, description="Relaxations in order; empty means none."
    )
    approval: Literal["auto", "ui"] = Field(
        "auto",
        description="auto: apply each step as declared. ui: before each step the run waits for an answer in "
        "the Prefect UI (the run's Resume form: what failed, the proposed step and its cost; approve it, pick "
        "another step, edit the budget or size cap, or stop with the infeasible report).",
    )
    approval_timeout_s: float = Field(
        3600.0,
        gt=0,
        allow_inf_nan=False,
        description="How long a ui approval waits for an answer, in seconds.",
    )
    on_timeout: Literal["stop", "approve"] = Field(
        "stop",
        description="What an unanswered approval does. stop: a run from a deployment is suspended while it "
        "waits (no worker is held) and ends when the time is up, its report saying what it asked. approve: "
        "the run waits in its process (holding its worker's slot) and applies the proposed step at the timeout.",
    )


class StorageSettings(_Section):
    """Where the run's artifacts (datasets, models, reports) are kept."""

    model_config = ConfigDict(title="Storage")

    uri: str | None = Field(
        None,
        description="Artifact store root: a local path, file:///dir, or s3://bucket/prefix. Empty: "
        "$STRATOS_HOME/artifacts (./.stratos/artifacts).",
    )
    block: str | None = Field(
        None,
        description="Name of a saved 'Stratos Artifact Store' block (S3 credentials live there); "
        "wins over uri.",
    )


class WorkerSettings(_Section):
    """Which Prefect work pool runs the GPU stages of the chosen server; none: run them in-process."""

    model_config = ConfigDict(title="Workers")

    pools_block: str | None = Field(
        None, description="Name of a saved 'Stratos Worker Pools' block mapping servers to pools."
    )
    pools: dict[str, str] = Field(
        default_factory=dict,
        description="Inline mapping: server id or glob over id / 'cloud:accelerator' -> 'pool' or 'pool/queue'.",
    )
    naming_convention: str = Field(
        "",
        description="Pool name for servers not in pools, e.g. 'stratos-{cloud}-{accelerator}'. Empty: "
        "such servers run stages in-process (the embedded default).",
    )
    wait_s: float = Field(
        30.0,
        gt=0,
        description="How long a server's pool may lack a live worker before the stage fails over to the "
        "next server on the Pareto front.",
    )
    heartbeat_timeout_s: float = Field(
        90.0,
        gt=0,
        description="A worker silent for this long is taken as lost; the stage is retried (and resumes).",
    )
    stage_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="Longest a dispatched stage may run before it is given up."
    )


class ServeSettings(_Section):
    """The deployment stage: serve the student behind an OpenAI-compatible endpoint."""

    model_config = ConfigDict(title="Serve")

    enabled: bool = Field(True, description="Serve the student at the end of the run.")
    backend: Literal["auto", "cpu", "vllm"] = Field(
        "auto",
        description="vllm: `vllm serve` (needs a GPU and STRATOS_VLLM or vllm on PATH); cpu: the built-in "
        "server; auto: vllm where a GPU and vllm are present, else cpu.",
    )
    host: str = Field("127.0.0.1", description="Interface the endpoint listens on.")
    port: int | None = Field(None, ge=1, le=65535, description="Port; empty picks a free one.")
    parity_size: int = Field(
        32,
        ge=1,
        le=MAX_ROWS,
        description="Test questions the served model answers to check parity with evaluation.",
    )
    parity_tolerance: float = Field(
        0.05, ge=0, le=1, description="Largest accuracy gap between served model and evaluation allowed."
    )
    startup_timeout_s: float | None = Field(
        None,
        gt=0,
        description="How long the server may take to be healthy, in seconds. Empty: 120 on the CPU path, "
        "900 for vLLM (it loads weights, profiles memory and captures CUDA graphs).",
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM: share of GPU memory to use.")


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is this machine only (localhost, 127.x, ::1, 0.0.0.0): unreachable from a VM."""
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: whether a cloud VM can resolve it is the user's to know
    return address.is_loopback or address.is_unspecified


class ProvisionSettings(_Section):
    """Launching the chosen server (SkyPilot) and starting its Prefect worker there; off by default.

    With `enabled`, the flow launches the server it chose under a cluster named after the run, waits
    for the worker to poll the server's pool, runs the GPU stages there and tears the cluster down
    at the end, whatever the outcome (stratos/provision/).
    """

    model_config = ConfigDict(title="Provision")

    enabled: bool = Field(
        False,
        description="Launch the chosen server and its worker; off: use existing workers or run in-process.",
    )
    backend: Literal["skypilot", "local"] = Field(
        "skypilot",
        description="skypilot: launch through SkyPilot in its own venv (scripts/setup-sky.sh, $STRATOS_SKY); "
        "local: a stand-in that starts a Prefect process worker on this machine (tests, dry runs).",
    )
    use_spot: bool | None = Field(
        None,
        description="Launch a spot instance. Empty: follow servers.use_spot, so the launched price is the "
        "one the server was chosen on.",
    )
    idle_minutes_to_autostop: int | None = Field(
        30,
        ge=1,
        description="Backstop for a run that cannot tear its cluster down (killed, machine lost): the worker "
        "exits when the flow run that launched it ends, and SkyPilot downs the cluster after this many "
        "idle minutes. Empty: no backstop.",
    )
    down: bool = Field(
        True,
        description="Tear the cluster down when the flow ends (success, failure, cancellation or budget stop). "
        "false: leave it up (e.g. to keep serving); `stratos down RUN` ends it.",
    )
    retry_until_up: bool = Field(
        False,
        description="Let SkyPilot retry a server with no capacity until it comes up, instead of failing over "
        "to the next server on the Pareto front.",
    )
    setup: Literal["image", "pip"] = Field(
        "image",
        description="How the worker gets Stratos: image runs the GPU worker image (docker/gpu-worker.Dockerfile) "
        "named by `image`; pip installs `pip_requirement` on the VM.",
    )
    image: str | None = Field(
        None,
        description="The GPU worker image, pushed to a registry the VM can pull from, e.g. "
        "ghcr.io/you/stratos-gpu-worker:0.1.0 (setup: image).",
    )
    pip_requirement: str | None = Field(
        None,
        description="A pinned requirement for Stratos (setup: pip), e.g. 'stratos @ "
        "git+https://github.com/you/stratos@v0.1.0'. PyPI's 'stratos' is an unrelated project.",
    )
    prefect_api_url: str | None = Field(
        None,
        description="Prefect API URL the worker on the server reports to. Empty: this process's "
        "PREFECT_API_URL. A cloud VM cannot reach a loopback URL (localhost, 127.0.0.1, ::1).",
    )
    prefect_api_key_env: str | None = Field(
        None,
        description="Environment variable holding a Prefect API key (Prefect Cloud), passed to the worker as "
        "a SkyPilot secret; never written to task files or logs.",
    )
    launch_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Longest a launch may take until the pool has a live worker; then the cluster is downed "
        "and the next server on the Pareto front is tried.",
    )

    @field_validator("prefect_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and (
            urlparse(value).scheme not in ("http", "https") or not urlparse(value).hostname
        ):
            raise ValueError(
                f"{value!r} is not an http(s) URL; give the Prefect API URL, e.g. https://prefect.example.com/api"
            )
        return value

    @model_validator(mode="after")
    def _launchable(self) -> ProvisionSettings:
        if not self.enabled or self.backend != "skypilot":
            return self
        url = self.prefect_api_url
        if url and is_loopback_url(url):
            raise ValueError(
                f"provision.prefect_api_url = '{url}' is a loopback address, which a cloud VM cannot reach; "
                "give an address the server can reach (a public or VPN host, or Prefect Cloud)"
            )
        if self.setup == "image" and not self.image:
            raise ValueError(
                "provision.setup = 'image' needs provision.image: the GPU worker image "
                "(docker/gpu-worker.Dockerfile) pushed to a registry the VM can pull from; or set setup: pip"
            )
        if self.setup == "pip" and not _pinned(self.pip_requirement):
            raise ValueError(
                f"provision.pip_requirement = {self.pip_requirement!r} is not a pinned requirement; use "
                "'stratos @ git+https://github.com/you/stratos@<tag or commit>' or a wheel URL "
                "(PyPI's 'stratos' is an unrelated project)"
            )
        return self


def _pinned(requirement: str | None) -> bool:
    """A requirement that names one version: 'x==1.2', a VCS URL at a ref, or a wheel/sdist URL."""
    if not requirement:
        return False
    if "==" in requirement:
        return True
    url = requirement.partition(" @ ")[2].strip()
    return url.endswith((".whl", ".tar.gz", ".zip")) or (
        url.startswith("git+") and "@" in url.split("://", 1)[-1]
    )


class DistillSpec(_Section):
    """Everything one Stratos run needs."""

    model_config = ConfigDict(title="Stratos spec")

    # The order is the form's: what a user sets per run first, the advanced knobs after.
    task: TaskSpec | None = Field(
        None, description="The task; required by every stage after server selection."
    )
    constraints: Constraints = Field(
        default_factory=Constraints, description="Accuracy, latency and budget limits."
    )
    teachers: list[ModelCandidate] = Field(default_factory=list, description="Teacher candidates.")
    students: list[ModelCandidate] = Field(
        default_factory=list, description="Student candidates, smallest first."
    )
    name: str = Field("stratos-run", description="Run name used in reports and artifact paths.")
    servers: ServerSettings = Field(default_factory=ServerSettings, description="Catalogs and PFG settings.")
    strategy: StrategySettings = Field(
        default_factory=StrategySettings, description="Synthesis mode settings."
    )
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="Training settings.")
    relax: RelaxPolicy = Field(default_factory=RelaxPolicy, description="Constraint-violation loop policy.")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Artifact store.")
    workers: WorkerSettings = Field(
        default_factory=WorkerSettings, description="Prefect work pools that run GPU stages on servers."
    )
    serve: ServeSettings = Field(default_factory=ServeSettings, description="Serving the student.")
    provision: ProvisionSettings = Field(
        default_factory=ProvisionSettings, description="Launching the chosen server (off by default)."
    )

    @model_validator(mode="after")
    def _hourly_cap_within_budget(self) -> DistillSpec:
        c = self.constraints
        if c.max_hourly_usd is not None and c.max_hourly_usd > c.budget_usd:
            raise ValueError(
                f"constraints.max_hourly_usd ({c.max_hourly_usd}) is above constraints.budget_usd "
                f"({c.budget_usd}); one hour would spend the whole budget. Lower the cap or raise the budget"
            )
        for kind, group in (("teachers", self.teachers), ("students", self.students)):
            names = [m.name for m in group]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                where = " and ".join(f"{kind}[{i}]" for i, n in enumerate(names) if n == dupes[0])
                raise ValueError(
                    f"{kind} names must be unique; '{dupes[0]}' is the name of {where}. Rename one"
                )
        return self

    @model_validator(mode="after")
    def _provisioned_server_reachable(self) -> DistillSpec:
        p = self.provision
        if not p.enabled or p.backend != "skypilot":
            return self
        if not (self.storage.block or (self.storage.uri or "").startswith("s3://")):
            raise ValueError(
                f"provision.backend 'skypilot' runs stages on a cloud VM, which cannot read the local artifact "
                f"store storage.uri = {self.storage.uri!r}; set storage.uri to s3://bucket/prefix or storage.block"
            )
        if p.down and self.serve.enabled:
            raise ValueError(
                "provision.down = true tears the server down when the run ends, and with it the student that "
                "serve.enabled = true serves there; set provision.down: false to keep serving (end it with "
                "`stratos down RUN`), or serve.enabled: false"
            )
        return self


def require_runnable(spec: DistillSpec) -> TaskSpec:
    """What a distillation run needs beyond a valid spec (`stratos plan` needs less); the task section."""
    if spec.task is None:
        raise SpecError(
            "spec field 'task' is required for a distillation run; add a task section (domain, ...)"
        )
    if not spec.teachers:
        raise SpecError("spec field 'teachers' is empty; add at least one teacher candidate")
    if not spec.students:
        raise SpecError("spec field 'students' is empty; add at least one student candidate")
    return spec.task


class RunSpec(DistillSpec):
    """Everything one Stratos run needs: the task, at least one teacher and one student; the rest has defaults."""

    # `stratos plan` takes a DistillSpec (server selection needs neither task nor candidates); the
    # deployments' UI form is this model, so the form marks what a run requires.

    model_config = ConfigDict(title="Stratos run spec")

    task: TaskSpec = Field(description="The task: a built-in domain or your dataset file.")
    teachers: list[ModelCandidate] = Field(min_length=1, description="Teacher candidates (at least one).")
    students: list[ModelCandidate] = Field(
        min_length=1, description="Student candidates, smallest first (at least one)."
    )


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    """One readable line for a pydantic error: field, value, what is wrong (and a near name for typos)."""
    loc = ".".join(str(p) for p in error["loc"]) or "(spec)"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        parent = _model_at(model, error["loc"][:-1])
        known = list(parent.model_fields) if parent else []
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"known fields: {', '.join(known)}"
        return f"spec field '{loc}' is not a known field; {hint}"
    if error["type"] == "missing":
        return f"spec field '{loc}' is required; add it"
    if error["type"] == "list_items":
        return f"spec field '{loc}': {msg}"
    value = error.get("input")
    if isinstance(value, dict | list) and error["type"] == "value_error":
        # A rule over a section or a list: its message names what is wrong; a dump of the input is noise.
        kind = "section" if isinstance(value, dict) else "field"
        return msg if loc == "(spec)" else f"spec {kind} '{loc}': {msg}"
    hint = _HINTS.get(error["type"], "")
    return f"spec field '{loc}' = {_short(value)}: {msg}{hint}"


def _by_list(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per list field, not one per bad item: a triple given as [] or ['a', 'b'] is one problem."""
    out: list[dict[str, Any]] = []
    lists: dict[tuple, list[dict[str, Any]]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        if len(loc) < 2 or not isinstance(loc[-1], int) or isinstance(loc[-2], int):
            out.append(error)
        elif loc[:-1] not in lists:
            lists[loc[:-1]] = [error]
            out.append({"loc": loc[:-1], "items": lists[loc[:-1]]})
        else:
            lists[loc[:-1]].append(error)
    return [_list_error(e) if "items" in e else e for e in out]


def _list_error(group: dict[str, Any]) -> dict[str, Any]:
    items: list[dict[str, Any]] = group["items"]
    if all(e["type"] == "missing" for e in items):
        size = max(e["loc"][-1] for e in items) + 1
        msg = f"must be a list of {size} items"
    else:
        bad = ", ".join(f"{e['loc'][-1]} = {_short(e.get('input'), 20)}" for e in items)
        msg = f"item {bad}: {items[0]['msg']}"
    return {"type": "list_items", "loc": group["loc"], "msg": msg, "input": items[0].get("input")}


# What to do, for pydantic errors whose message says only what is wrong.
_HINTS = {
    "finite_number": "; give a plain number (YAML's .inf and .nan cannot be used)",
    "less_than_equal": "; lower it",
    "less_than": "; lower it",
}


def _short(value: Any, limit: int = 80) -> str:
    """A bad value as it was written, cut short: the message is one line, not a dump."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def _one_line(text: str) -> str:
    """`text` with any line break or control character a value brought in written as an escape."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class found by walking `loc` down from `model`."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or (ann,)
        current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current


def parse_spec(data: dict[str, Any]) -> DistillSpec:
    """Validate a spec dict; raise SpecError with one line per problem."""
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of sections, got {type(data).__name__}")
    try:
        return DistillSpec.model_validate(data)
    except ValidationError as exc:
        lines = [_one_line(_describe(e, DistillSpec)) for e in _by_list(exc.errors())]
        if len(lines) == 1:  # the usual case: one line, as the CLI prints it
            raise SpecError(lines[0]) from None
        raise SpecError(f"invalid spec ({len(lines)} problems):\n  " + "\n  ".join(lines)) from None


def read_spec_file(path: str | Path) -> Any:
    """The YAML document of a spec file (None when the file is empty), or SpecError naming the problem."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"spec '{path}' is a directory; pass the path to a YAML spec file")
    if not path.is_file():
        raise SpecError(f"spec file '{path}' does not exist; pass the path to a YAML spec")
    try:
        text = read_utf8(path, "spec file")
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise SpecError(f"spec file '{path}' is not valid YAML: {first}") from None


def is_empty_spec(path: str | Path) -> bool:
    """Whether a spec file sets nothing (empty, comments only, or `{}`): every default applies."""
    return read_spec_file(path) in (None, {})


def load_spec(path: str | Path) -> DistillSpec:
    """Read and validate a YAML spec. Relative catalog/dataset paths resolve against the spec's folder."""
    path = Path(path)
    data = read_spec_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            f"spec file '{path}' holds a YAML {type(data).__name__}, not a mapping of sections; "
            "start it with sections such as 'task:' and 'constraints:'"
        )
    _resolve_relative_paths(data, path.parent.resolve())
    return parse_spec(data)


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Make file paths in the spec relative to the spec file, as users expect from a config file."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value != BUILTIN_CATALOG and not Path(value).is_absolute():
            candidate = base / value
            return str(candidate) if candidate.exists() else value
        return value

    servers = data.get("servers")
    if isinstance(servers, dict) and isinstance(servers.get("catalogs"), list):
        servers["catalogs"] = [fix(v) for v in servers["catalogs"]]
    task = data.get("task")
    if isinstance(task, dict) and task.get("dataset"):
        task["dataset"] = fix(task["dataset"])
    for group in ("teachers", "students"):
        for cand in data.get(group) or []:
            if isinstance(cand, dict) and cand.get("kind", "hf") in ("hf", "stored") and "model" in cand:
                cand["model"] = fix(cand["model"])

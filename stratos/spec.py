"""DistillSpec: the one input of a Stratos run, validated once, before any expensive work.

Every field carries a description (it becomes the Prefect UI form) and the
cross-field rules live in validators here, not in task bodies. Sections that
later stages fill in (teachers, students, strategy, training, relax) are named
now so the spec grows without being reshaped.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stratos.data import CATALOG_DIR

BUILTIN_CATALOG = "builtin"
SELECTION_METHODS = ("pfg", "cost_first", "hardware_first", "random", "weighted_sum")


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, the bad value and the fix."""


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskSpec(_Section):
    """What the student must learn to do."""

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
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Domain knobs, e.g. mahjong {hand_size: 7, suits: 1} or arithmetic {digits: 2}.",
    )
    train_size: int = Field(2000, gt=0, description="Training questions to draw.")
    probe_size: int = Field(100, gt=0, description="Probe questions for teacher selection and pre-screening.")
    test_size: int = Field(200, gt=0, description="Held-out questions for evaluation.")
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
        100.0, gt=0, description="Total budget for the run (generation + training), USD."
    )
    max_hourly_usd: float | None = Field(
        None, gt=0, description="Maximum hosting price in USD per hour; none means no cap."
    )
    region: str = Field(
        "us-east",
        description="Where the user's traffic comes from: a region alias (us-east, eu-west, asia-east, ...), "
        "a cloud region from the catalogs, or 'lat,lon'.",
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
        from tasks.catalog import region_coordinates  # the region table lives with the catalogs

        region_coordinates(value)  # raises a ValueError that names the known regions
        return value


class ServerSettings(_Section):
    """Where candidate servers come from and how one is chosen (Pareto Front Grid)."""

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
    planned_hours: float = Field(
        2.0,
        gt=0,
        description="GPU hours the run is expected to need; a server whose price times this "
        "exceeds the budget is infeasible.",
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
            if entry != BUILTIN_CATALOG and not Path(entry).expanduser().exists():
                raise ValueError(f"catalog file '{entry}' does not exist; give a CSV/YAML path or 'builtin'")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or sum(value) <= 0:
            raise ValueError("weights must be non-negative and not all zero, e.g. [0.34, 0.33, 0.33]")
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

    tau: float = Field(
        0.5, ge=0, le=1, description="Teacher probe accuracy at or above τ → alignment, else injection."
    )
    force_mode: Literal["alignment", "injection"] | None = Field(
        None, description="Force a mode (ablations)."
    )
    num_samples: int = Field(4, ge=1, description="Teacher samples per training question.")
    max_attempts: int = Field(
        8, ge=1, description="Injection: generation attempts per question before giving up."
    )
    temperature: float = Field(0.8, ge=0, description="Teacher sampling temperature during synthesis.")
    prescreen_size: int = Field(32, gt=0, description="Questions in the student capacity pre-screen.")
    prescreen_threshold: float = Field(
        0.0, ge=0, le=1, description="Minimum pre-screen accuracy a student must reach."
    )
    prescreen_demos: int = Field(
        3, ge=0, description="Teacher-written worked examples in the few-shot pre-screen prompt."
    )
    max_new_tokens: int = Field(256, ge=1, description="Generation cap for teacher and student completions.")


class TrainingSettings(_Section):
    """How the student is trained."""

    method: Literal["auto", "lora", "full", "grpo"] = Field(
        "auto", description="auto: full fine-tuning for small/random students, LoRA-SFT otherwise."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs over the synthesized data.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Batch size per device.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    num_generations: int = Field(8, ge=2, description="GRPO group size.")
    beta: float = Field(0.0, ge=0, description="GRPO KL coefficient.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps.")
    max_seq_length: int = Field(256, ge=16, description="Maximum tokens per training example.")
    bf16: bool | None = Field(
        None,
        description="bf16 mixed precision. Empty: on for GPUs that support it, off on a CPU. true on a CPU "
        "turns on bf16 autocast, faster where the CPU has bf16 units (AVX512_BF16, AMX).",
    )


class RelaxStep(_Section):
    """One bounded relaxation tried when nothing is feasible."""

    action: Literal["larger_student", "larger_server", "higher_budget", "higher_hourly_cap"] = Field(
        description="What to relax."
    )
    factor: float = Field(1.5, gt=1, description="Multiplier for budget/hourly cap/server memory steps.")


class RelaxPolicy(_Section):
    """The constraint-violation loop: relaxations tried in order, each logged."""

    steps: list[RelaxStep] = Field(
        default_factory=list, description="Relaxations in order; empty means none."
    )


class StorageSettings(_Section):
    """Where the run's artifacts (datasets, models, reports) are kept."""

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


class DeploySettings(_Section):
    """The deployment stage: serve the student behind an OpenAI-compatible endpoint."""

    enabled: bool = Field(True, description="Serve the student at the end of the run.")
    backend: Literal["auto", "cpu", "vllm"] = Field(
        "auto",
        description="vllm: `vllm serve` (needs a GPU and STRATOS_VLLM or vllm on PATH); cpu: the built-in "
        "server; auto: vllm where a GPU and vllm are present, else cpu.",
    )
    host: str = Field("127.0.0.1", description="Interface the endpoint listens on.")
    port: int | None = Field(None, ge=1, le=65535, description="Port; empty picks a free one.")
    parity_size: int = Field(
        32, ge=1, description="Test questions the served model answers to check parity with evaluation."
    )
    parity_tolerance: float = Field(
        0.05, ge=0, le=1, description="Largest accuracy gap between served model and evaluation allowed."
    )
    startup_timeout_s: float = Field(180.0, gt=0, description="How long the server may take to be healthy.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM: share of GPU memory to use.")


class DistillSpec(_Section):
    """Everything one Stratos run needs."""

    name: str = Field("stratos-run", description="Run name used in reports and artifact paths.")
    task: TaskSpec | None = Field(
        None, description="The task; required by every stage after server selection."
    )
    constraints: Constraints = Field(
        default_factory=Constraints, description="Accuracy, latency and budget limits."
    )
    servers: ServerSettings = Field(default_factory=ServerSettings, description="Catalogs and PFG settings.")
    teachers: list[ModelCandidate] = Field(default_factory=list, description="Teacher candidates.")
    students: list[ModelCandidate] = Field(
        default_factory=list, description="Student candidates, smallest first."
    )
    strategy: StrategySettings = Field(
        default_factory=StrategySettings, description="Synthesis mode settings."
    )
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="Training settings.")
    relax: RelaxPolicy = Field(default_factory=RelaxPolicy, description="Constraint-violation loop policy.")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Artifact store.")
    workers: WorkerSettings = Field(
        default_factory=WorkerSettings, description="Prefect work pools that run GPU stages on servers."
    )
    deploy: DeploySettings = Field(default_factory=DeploySettings, description="Serving the student.")

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
                raise ValueError(f"{kind} names must be unique; '{dupes[0]}' appears twice. Rename one")
        return self


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
    return f"spec field '{loc}' = {error.get('input')!r}: {msg}"


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
        lines = [_describe(e, DistillSpec) for e in exc.errors()]
        raise SpecError("invalid spec:\n  " + "\n  ".join(lines)) from None


def load_spec(path: str | Path) -> DistillSpec:
    """Read and validate a YAML spec. Relative catalog/dataset paths resolve against the spec's folder."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file '{path}' does not exist; pass the path to a YAML spec")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file '{path}' is not valid YAML: {exc}") from None
    if isinstance(data, dict):
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

"""The job estimate of every server: each stage's dollars as (low, planned, high), and GPU hours.

The formulas are stratos/job_cost.py's; this module applies them to a catalog.

`planned` is the work the run plans for at most (every injection attempt made,
every sample kept, completions at the cap until a probe measured them) at the
planned throughput shares, with the costlier teacher (the probe picks by
accuracy, so the budget must hold for either) and the first student (the flow
prefers the smallest that passes). `low` is the least work (one round, one
trace per question, completions as long as the reference answers) at the best
throughput, with the cheapest teacher and student; `high` is the planned work at
the worst throughput, completions at the cap, the costliest teacher and student.

GPU stages run as tasks/ runs them today: one process on one GPU, so a
server's other GPUs are paid for but idle; an 8-GPU server costs 8x an
equal 1-GPU one per hour and finishes no sooner. Each GPU stage also pays
`stage_overhead_s` (model loading, checkpoints). Servers differ only by $/h
and the per-GPU peak FLOPS and bandwidth, so the seconds are computed once per
distinct GPU and multiplied by each server's price (10^6 rows in well under a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stratos.job_cost import (
    CASES,
    STAGES,
    Case,
    CostRange,
    JobProfile,
    Stage,
    answer_cost,
    overhead_seconds,
    prompt_tokens,
    synthesis_cost,
    trace_tokens,
    training_seconds,
    training_sequences,
)


def gpu_table(servers: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct GPUs of `servers` (one GPU's tflops and bandwidth_gbs) and each server's row among them."""
    per_gpu = servers["tflops"].to_numpy(float) / np.maximum(servers["gpu_count"].to_numpy(float), 1.0)
    t_codes, t_values = pd.factorize(per_gpu, use_na_sentinel=False)
    b_codes, b_values = pd.factorize(servers["bandwidth_gbs"].to_numpy(float), use_na_sentinel=False)
    width = max(len(b_values), 1)
    rows, pairs = pd.factorize(t_codes * width + b_codes)
    gpus = pd.DataFrame({"tflops": t_values[pairs // width], "bandwidth_gbs": b_values[pairs % width]})
    return gpus, rows


@dataclass
class _Work:
    """One case's work on each distinct GPU: seconds per GPU row, API dollars per teacher."""

    teacher_api: np.ndarray  # (T,) synthesis + test dollars of each teacher's API calls
    teacher_syn_api: np.ndarray  # (T,) synthesis share of teacher_api
    teacher_syn_s: np.ndarray  # (T, G) synthesis seconds, overhead included for local teachers
    teacher_test_s: np.ndarray  # (T, G)
    student_train_s: np.ndarray  # (S, G) overhead included
    student_test_s: np.ndarray  # (S, G)
    shared_usd: float  # every teacher's probe through an API
    shared_s: np.ndarray  # (G,) local probes, every student's pre-screen, the evaluation stage's overhead


def _work(profile: JobProfile, gpus: pd.DataFrame, case: Case) -> _Work:
    """Every candidate's work in one case; nothing here depends on a server's price."""
    assert profile.task is not None
    task, s = profile.task, profile.strategy
    overhead = overhead_seconds(profile.estimate.stage_overhead_s, case)
    g = len(gpus)
    api, syn_api, syn_s, test_s = [], [], [], []
    shared_usd, shared_s = 0.0, np.zeros(g)
    for t in profile.teachers:
        a_syn, s_syn = synthesis_cost(profile, t, gpus, task.train_size, case)
        a_test, s_test = answer_cost(profile, t, gpus, task.test_size, case)
        a_probe, s_probe = answer_cost(profile, t, gpus, task.probe_size, case)
        local = t.kind == "hf" and t.size is not None
        api.append(a_syn + a_test)
        syn_api.append(a_syn)
        syn_s.append(s_syn + (overhead if local else 0.0))
        test_s.append(s_test)
        shared_usd, shared_s = shared_usd + a_probe, shared_s + s_probe
    few_shot = prompt_tokens(profile) * (1 + s.prescreen_demos) + s.prescreen_demos * trace_tokens(
        profile, case
    )
    train, test = [], []
    for student in profile.students:
        seqs = training_sequences(profile, student, case)
        train.append(training_seconds(profile, student, gpus, seqs, case) + overhead)
        test.append(answer_cost(profile, student, gpus, task.test_size, case)[1])
        for prompt in (prompt_tokens(profile), few_shot):
            shared_s = shared_s + answer_cost(profile, student, gpus, s.prescreen_size, case, prompt)[1]
    if profile.students or any(t.kind == "hf" and t.size for t in profile.teachers):
        shared_s = shared_s + overhead  # the evaluation stage loads its models once
    return _Work(
        np.array(api, dtype=float),
        np.array(syn_api, dtype=float),
        np.array(syn_s, dtype=float).reshape(-1, g),
        np.array(test_s, dtype=float).reshape(-1, g),
        np.array(train, dtype=float).reshape(-1, g),
        np.array(test, dtype=float).reshape(-1, g),
        shared_usd,
        shared_s,
    )


def _student_pick(work: _Work, case: Case) -> np.ndarray:
    """Per GPU row, the student a case takes: cheapest (low), first (planned), dearest (high).

    Dollars are seconds x the server's one $/h, so the pick per GPU row holds for every price.
    """
    seconds = work.student_train_s + work.student_test_s
    if case == "low":
        return seconds.argmin(axis=0)
    if case == "planned":
        return np.zeros(seconds.shape[1], dtype=int)
    return seconds.argmax(axis=0)


def planned_job_usd(profile: JobProfile, servers: pd.DataFrame) -> np.ndarray:
    """Each server's planned job cost, the figure selection uses (estimate_jobs' job_planned, fast)."""
    price = servers["cost_per_hour"].to_numpy(float)
    serving = profile.estimate.serve_hours * price
    if profile.task is None:
        return serving
    gpus, row = gpu_table(servers)
    work = _work(profile, gpus, "planned")
    per_s = price / 3600
    gpu_s = work.shared_s.copy()
    if len(work.student_train_s):
        gpu_s += work.student_train_s[0] + work.student_test_s[0]
    total = work.shared_usd + serving + gpu_s[row] * per_s
    if len(work.teacher_api):
        seconds = work.teacher_syn_s + work.teacher_test_s
        teacher = work.teacher_api[0] + seconds[0][row] * per_s
        for api, secs in zip(work.teacher_api[1:], seconds[1:], strict=True):
            teacher = np.maximum(teacher, api + secs[row] * per_s)  # the costlier teacher (see above)
        total += teacher
    return total


def _job_case(
    profile: JobProfile, gpus: pd.DataFrame, row: np.ndarray, price: np.ndarray, case: Case
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Dollars per stage per server for one case, and the GPU seconds the job runs on the server."""
    n = len(price)
    stages = {s: np.zeros(n) for s in STAGES}
    stages["serving"] = profile.estimate.serve_hours * price
    if profile.task is None:
        return stages, np.zeros(n)
    work, per_s = _work(profile, gpus, case), price / 3600
    gpu_s = work.shared_s[row]
    stages["evaluation"] = work.shared_usd + gpu_s * per_s
    if len(work.student_train_s):
        pick = _student_pick(work, case)[row]
        train_s = work.student_train_s[pick, row]
        test_s = work.student_test_s[pick, row]
        stages["training"] = train_s * per_s
        stages["evaluation"] = stages["evaluation"] + test_s * per_s
        gpu_s = gpu_s + train_s + test_s
    if len(work.teacher_api):
        totals = work.teacher_api[:, None] + (work.teacher_syn_s + work.teacher_test_s)[:, row] * per_s
        pick = totals.argmin(axis=0) if case == "low" else totals.argmax(axis=0)
        syn_s, test_s = work.teacher_syn_s[pick, row], work.teacher_test_s[pick, row]
        syn_api = work.teacher_syn_api[pick]
        stages["synthesis"] = syn_api + syn_s * per_s
        stages["evaluation"] = stages["evaluation"] + (work.teacher_api[pick] - syn_api) + test_s * per_s
        gpu_s = gpu_s + syn_s + test_s
    return stages, gpu_s


def estimate_jobs(profile: JobProfile, servers: pd.DataFrame) -> pd.DataFrame:
    """Per server: `{stage}_{case}` and `job_{case}` dollars, and `gpu_hours` (planned, serving included).

    `servers` has one row per server with cost_per_hour, tflops (the server's total), gpu_count and
    bandwidth_gbs (per GPU), as stratos.pfg.server_objectives writes them. For display: selection
    itself needs only planned_job_usd.
    """
    gpus, row = gpu_table(servers)
    price = servers["cost_per_hour"].to_numpy(float)
    out: dict[str, np.ndarray] = {}
    for case in CASES:
        stages, gpu_s = _job_case(profile, gpus, row, price, case)
        for stage, usd in stages.items():
            out[f"{stage}_{case}"] = usd
        out[f"job_{case}"] = sum(stages.values())
        if case == "planned":
            out["gpu_hours"] = gpu_s / 3600 + profile.estimate.serve_hours
    return pd.DataFrame(out, index=servers.index)


def job_estimate_record(estimates: pd.DataFrame, position: int) -> dict[str, Any]:
    """One server's estimate as `stratos plan --json` writes it."""
    r = estimates.iloc[position]
    stage = {s: CostRange(r[f"{s}_low"], r[f"{s}_planned"], r[f"{s}_high"]).to_dict() for s in STAGES}
    total = CostRange(r["job_low"], r["job_planned"], r["job_high"]).to_dict()
    return {**total, "gpu_hours": round(float(r["gpu_hours"]), 4), "by_stage": stage}


DEPENDS_ON: dict[Stage, tuple[str, ...]] = {
    "synthesis": (
        "task.train_size",
        "strategy.num_samples",
        "strategy.max_attempts",
        "strategy.max_new_tokens",
        "strategy.force_mode or the teacher's probe accuracy against strategy.tau",
        "teachers[].price_per_1k_input/output (API teachers)",
        "teacher size, one GPU's bandwidth and bf16 TFLOPS, job_estimate.generation_efficiency (local teachers)",
        "prompt and answer length of the task's questions",
        "server $/h, job_estimate.stage_overhead_s",
    ),
    "training": (
        "task.train_size",
        "strategy.num_samples",
        "training.method",
        "training.num_train_epochs",
        "training.max_seq_length",
        "training.lora_r",
        "training.num_generations and beta (GRPO)",
        "student size",
        "trace length (probe or strategy.max_new_tokens)",
        "one GPU's bf16 TFLOPS, job_estimate.mfu",
        "server $/h, job_estimate.stage_overhead_s",
    ),
    "evaluation": (
        "task.probe_size (every teacher)",
        "strategy.prescreen_size and prescreen_demos (every student, zero- and few-shot)",
        "task.test_size (teacher and student)",
        "strategy.max_new_tokens",
        "teacher prices and sizes, student sizes",
        "one GPU's bandwidth and bf16 TFLOPS, job_estimate.generation_efficiency",
        "server $/h",
    ),
    "serving": ("job_estimate.serve_hours", "server $/h"),
}


def assumptions(profile: JobProfile) -> dict[str, dict[str, list[str]]]:
    """Per stage: the inputs its figures depend on, and what was assumed or left out."""
    return {
        stage: {"depends_on": list(DEPENDS_ON[stage]), "assumed": list(profile.notes.get(stage, ()))}
        for stage in STAGES
    }

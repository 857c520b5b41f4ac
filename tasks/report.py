"""Stage 6: the evaluation report -- student next to teacher on the same held-out split.

Inputs are what earlier stages wrote: the EvalResults of tasks.evaluate (both
models scored by the same harness on the same questions), the student's
training meta.json (tasks.train) and the chosen server's catalog row.

Per model the report gives:
    accuracy, latency p50/p95 and tokens/s     measured by the harness (this machine or the endpoint)
    training hours and $                       meta.json wall time x the server's $/h (teacher: none)
    serving tokens/s on the chosen server      roofline estimate (stratos.estimates.decode_latency_ms,
                                               one request of 256 prompt + 256 new tokens, batch 1) for a
                                               local model whose config is readable; otherwise the
                                               harness's measured tokens/s. `tps_source` says which.
    serving $ per 1M generated tokens          $/h / (tokens/s x 3600) x 1e6; for an API teacher its
                                               per-token price as measured by the harness, when known
    projected cost                             training $ + serving $ for `volume_tokens` generated tokens
    score                                      stratos.scoring.candidate_scores over accuracy, p95 latency,
                                               training hours and projected cost

The batch-1 roofline is the pessimistic end of serving cost: a batching server
(vLLM) amortises weight reads over many requests and costs far less per token.
It is applied to both models alike, so the comparison stays fair.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stratos.estimates import decode_latency_ms, load_config
from stratos.files import write_text_atomic
from stratos.scoring import candidate_scores
from tasks.evaluate import EvalResult

PROMPT_TOKENS, NEW_TOKENS = 256, 256  # the request the roofline prices
DEFAULT_VOLUME_TOKENS = 100_000_000  # generated tokens the projected serving cost is for
SERVER_FIELDS = ("bandwidth_gbs", "tflops", "gpu_count")
TRAINING_FIELDS = ("method", "steps", "wall_time_s", "loss_first", "loss_last", "base_model", "data_sha256")


def server_price(server: Mapping[str, Any]) -> float:
    """The server's $/h: `cost_per_hour` (selection output) or `price` (catalog row)."""
    for key in ("cost_per_hour", "price"):
        if server.get(key) is not None:
            return float(server[key])
    raise ValueError(
        f"server '{server.get('id', '?')}' has no 'cost_per_hour' or 'price'; pass the chosen server's catalog row"
    )


def usd_per_million_tokens(price_per_hour: float, tokens_per_second: float) -> float:
    """Serving $ per 1M generated tokens at a sustained rate on a server billed by the hour."""
    if tokens_per_second <= 0:
        raise ValueError(f"tokens_per_second must be positive to price serving, got {tokens_per_second}")
    return price_per_hour / (tokens_per_second * 3600) * 1e6


def roofline_tokens_per_second(model: str | Path, server: Mapping[str, Any]) -> float:
    """Generated tokens/s of one request on the server, from the model config (no weights loaded)."""
    missing = [f for f in SERVER_FIELDS if server.get(f) is None]
    if missing:
        raise ValueError(f"server '{server.get('id', '?')}' lacks '{missing[0]}'; pass a catalog row")
    ms = decode_latency_ms(load_config(model), float(server["bandwidth_gbs"]), float(server["tflops"]),
                           int(server["gpu_count"]), PROMPT_TOKENS, NEW_TOKENS)  # fmt: skip
    return NEW_TOKENS / (ms / 1000)


def _serving(result: EvalResult, model: str | Path | None, server: Mapping[str, Any]) -> dict[str, Any]:
    """Serving throughput and $/1M tokens for one model, with where the figure comes from."""
    if model is not None and (Path(model) / "config.json").is_file():
        tps, source = roofline_tokens_per_second(model, server), "roofline"
    else:
        tps, source = result.tokens_per_second, "measured"
    if source == "measured" and result.cost_usd > 0 and result.completion_tokens > 0:
        # An API model is billed per token, not per server hour: use what the harness paid.
        per_million, source = result.cost_usd / result.completion_tokens * 1e6, "api-price"
    elif tps > 0:
        per_million = usd_per_million_tokens(server_price(server), tps)
    elif result.completion_tokens == 0 and result.n > 0:
        # Replayed completions (a stored teacher) with no token counts: paid for already, nothing to serve.
        per_million, source = 0.0, "recorded"
    else:
        raise ValueError(
            f"model '{result.backend}' has no local config and no measured tokens/s; cannot price serving"
        )
    return {"tokens_per_second": tps, "tps_source": source, "usd_per_1m_tokens": per_million}


def _side(result: EvalResult, model: str | Path | None, server: Mapping[str, Any], train_seconds: float,
          volume_tokens: int) -> dict[str, Any]:  # fmt: skip
    serving = _serving(result, model, server)
    training_hours = train_seconds / 3600
    training_usd = training_hours * server_price(server)
    serving_usd = serving["usd_per_1m_tokens"] * volume_tokens / 1e6
    return {
        "model": str(model) if model is not None else result.backend,
        "n": result.n,
        "accuracy": result.accuracy,
        "latency_p50_s": result.latency_p50_s,
        "latency_p95_s": result.latency_p95_s,
        "measured_tokens_per_second": result.tokens_per_second,
        "training_hours": training_hours,
        "training_usd": training_usd,
        **serving,
        "projected_serving_usd": serving_usd,
        "projected_cost_usd": training_usd + serving_usd,
    }


def build_report(
    student: EvalResult,
    teacher: EvalResult,
    server: Mapping[str, Any],
    train_meta: Mapping[str, Any],
    student_model: str | Path,
    teacher_model: str | Path | None = None,
    volume_tokens: int = DEFAULT_VOLUME_TOKENS,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict: teacher and student side by side, with their scores.

    Args:
        train_meta: the student's meta.json (tasks.train); its wall_time_s is the training time.
        teacher_model: a local directory prices the teacher by roofline; None or an API name uses
            what the harness measured.
        volume_tokens: generated tokens the projected serving cost is computed for.
    """
    if student.n != teacher.n or student.domain != teacher.domain:
        raise ValueError(
            f"student ({student.domain}, n={student.n}) and teacher ({teacher.domain}, n={teacher.n}) were not "
            "scored on the same split; evaluate both on the same held-out examples"
        )
    if "wall_time_s" not in train_meta:
        raise ValueError("train_meta lacks 'wall_time_s'; pass the meta.json that tasks.train wrote")
    sides = {  # the teacher is not trained here: zero training time and $
        "teacher": _side(teacher, teacher_model, server, 0.0, volume_tokens),
        "student": _side(student, student_model, server, float(train_meta["wall_time_s"]), volume_tokens),
    }
    objectives = {
        name: {"accuracy": s["accuracy"], "latency_s": s["latency_p95_s"],
               "training_hours": s["training_hours"], "cost_usd": s["projected_cost_usd"]}
        for name, s in sides.items()
    }  # fmt: skip
    scores = candidate_scores(objectives, weights)
    for name, s in sides.items():
        s["score"] = scores[name]
    return {
        "domain": student.domain,
        "server": {"id": str(server.get("id")), "price_per_hour": server_price(server)}
        | {f: None if server.get(f) is None else float(server[f]) for f in SERVER_FIELDS},  # numpy -> JSON
        "training": {k: train_meta.get(k) for k in TRAINING_FIELDS},
        "volume_tokens": volume_tokens,
        "score_weights": dict(weights or {}),
        "candidates": sides,
    }


ROWS = (  # (label, key, format) of the markdown table
    ("accuracy", "accuracy", "{:.1%}"),
    ("latency p50 (ms)", "latency_p50_s", "ms"),
    ("latency p95 (ms)", "latency_p95_s", "ms"),
    ("measured tokens/s", "measured_tokens_per_second", "{:.1f}"),
    ("serving tokens/s on server", "tokens_per_second", "{:.1f}"),
    ("tokens/s source", "tps_source", "{}"),
    ("serving $ / 1M tokens", "usd_per_1m_tokens", "{:.4f}"),
    ("training time (h)", "training_hours", "{:.4f}"),
    ("training $", "training_usd", "{:.4f}"),
    ("projected cost $", "projected_cost_usd", "{:.2f}"),
    ("multi-objective score", "score", "{:.3f}"),
)


def report_markdown(report: Mapping[str, Any]) -> str:
    """Teacher and student side by side as a markdown table, with the assumptions under it."""
    teacher, student = report["candidates"]["teacher"], report["candidates"]["student"]
    lines = [f"# Student vs teacher: {report['domain']}", "",
             f"Server `{report['server']['id']}` at ${report['server']['price_per_hour']:.2f}/h; "
             f"{teacher['n']} held-out questions.", "", "| | teacher | student |", "|---|---:|---:|"]  # fmt: skip
    for label, key, fmt in ROWS:
        cells = [
            f"{side[key] * 1000:.1f}" if fmt == "ms" else fmt.format(side[key]) for side in (teacher, student)
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += ["", f"Projected cost = training $ + serving $ for {report['volume_tokens']:,} generated tokens. "
              "Score: closeness to the ideal over accuracy, p95 latency, training time and projected cost, "
              "each min-max normalised across these two models (stratos.scoring.candidate_scores).", ""]  # fmt: skip
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Write report.json and report.md into `out_dir` (each via a temporary name); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.md", report_markdown(report))
    write_text_atomic(
        out / "report.json", json.dumps(report, indent=2, default=str)
    )  # last: marks it complete
    return {"markdown": str(out / "report.md"), "json": str(out / "report.json")}


def evaluation_report(student: EvalResult, teacher: EvalResult, server: Mapping[str, Any],
                      train_meta: Mapping[str, Any], student_model: str | Path, out_dir: str | Path,
                      teacher_model: str | Path | None = None) -> dict[str, str]:  # fmt: skip
    """Build and write the report in one call (the flow's entry point)."""
    report = build_report(student, teacher, server, train_meta, student_model, teacher_model)
    return write_report(report, out_dir)


report_task = task(evaluation_report, name="evaluation-report", cache_policy=NO_CACHE)

"""Stage 11, report: the run's choices with their reasons, and the student next to the teacher.

Inputs are what earlier stages wrote: the EvalResults of stratos.evaluation (both
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

`report_markdown` renders the one report a run leaves (terminal, Prefect artifact,
reports/<key>/report.md): the choices and why, the teacher probe and student
pre-screen tables (strict and flexible), the constraint loop, synthesis and
training, the comparison table, the endpoint and any fail-over. Figures are
rounded for people; report.json keeps full precision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel, Field

from stratos.estimates import decode_latency_ms, load_config
from stratos.evaluation import EvalResult
from stratos.jobs import CONTENT, digest
from stratos.scoring import candidate_scores
from stratos.storage import fetch, from_uri
from tasks.build_models import ResolvedModel
from tasks.evaluate import Evaluation
from tasks.select_server import ServerRow
from tasks.train import TrainedStudent

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
    ms = decode_latency_ms(
        load_config(model),
        float(server["bandwidth_gbs"]),
        float(server["tflops"]),
        int(server["gpu_count"]),
        PROMPT_TOKENS,
        NEW_TOKENS,
    )
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


def _side(
    result: EvalResult,
    model: str | Path | None,
    server: Mapping[str, Any],
    train_seconds: float,
    volume_tokens: int,
) -> dict[str, Any]:
    serving = _serving(result, model, server)
    training_hours = train_seconds / 3600
    training_usd = training_hours * server_price(server)
    serving_usd = serving["usd_per_1m_tokens"] * volume_tokens / 1e6
    return {
        "model": str(model) if model is not None else result.backend,
        "n": result.n,
        "accuracy": result.accuracy,
        "strict_accuracy": result.strict_accuracy,
        "flexible_accuracy": result.flexible_accuracy,
        "answer_match": result.match,
        "format_warning": result.format_warning,
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
        name: {
            "accuracy": s["accuracy"],
            "latency_s": s["latency_p95_s"],
            "training_hours": s["training_hours"],
            "cost_usd": s["projected_cost_usd"],
        }
        for name, s in sides.items()
    }
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
    ("accuracy, strict ('#### X' only)", "strict_accuracy", "{:.1%}"),
    ("accuracy, flexible (every rule)", "flexible_accuracy", "{:.1%}"),
    ("latency p50 (ms)", "latency_p50_s", "ms"),
    ("latency p95 (ms)", "latency_p95_s", "ms"),
    ("measured tokens/s", "measured_tokens_per_second", "{:,.0f}"),
    ("serving tokens/s on server", "tokens_per_second", "{:,.0f}"),
    ("tokens/s source", "tps_source", "{}"),
    ("serving $ / 1M tokens", "usd_per_1m_tokens", "{:.4f}"),
    ("training time (h)", "training_hours", "{:.4f}"),
    ("training $", "training_usd", "{:.4f}"),
    ("projected cost $", "projected_cost_usd", "{:.2f}"),
    ("multi-objective score", "score", "{:.3f}"),
)


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as people read it: the run (when the report has one) and the comparison table."""
    run = report.get("run")
    lines = _run_lines(run) if run else []
    lines += _comparison_lines(report)
    if run:
        lines += _endpoint_lines(run)
    return "\n".join(lines)


def _comparison_lines(report: Mapping[str, Any]) -> list[str]:
    teacher, student = report["candidates"]["teacher"], report["candidates"]["student"]
    lines = [
        f"## Student vs teacher: {report['domain']}",
        "",
        f"Server `{report['server']['id']}` at ${report['server']['price_per_hour']:.2f}/h; "
        f"{teacher['n']} held-out questions.",
        "",
        "| | teacher | student |",
        "|---|---:|---:|",
    ]
    for label, key, fmt in ROWS:
        cells = [
            f"{side[key] * 1000:.1f}" if fmt == "ms" else fmt.format(side[key]) for side in (teacher, student)
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        f"Projected cost = training $ + serving $ for {report['volume_tokens']:,} generated tokens. "
        "Score: closeness to the ideal over accuracy, p95 latency, training time and projected cost, "
        "each min-max normalised across these two models (stratos.scoring.candidate_scores). "
        f"`accuracy` reads answers {teacher.get('answer_match', 'flexible')}ly (task.answer_match).",
        "",
    ]
    warnings = [side.get("format_warning") for side in (teacher, student) if side.get("format_warning")]
    return lines + [f"> **Answer format:** {w}" for w in warnings] + ([""] if warnings else [])


def _run_lines(run: Mapping[str, Any]) -> list[str]:
    """Choices, the teacher probe and pre-screen tables, the loop, synthesis and training."""
    c = run["choices"]
    synth, training = run["metrics"]["synthesis"], run["metrics"]["training"]
    lines = [
        f"# Stratos run `{run['name']}`",
        "",
        "## Choices",
        "",
        f"- **Server** `{c['server']['id']}`: {c['server']['reason']}",
        f"- **Teacher** `{c['teacher']['name']}`: {c['teacher']['reason']}",
        f"- **Student** `{c['student']['name']}`: {c['student']['reason']}",
        f"- **Strategy** {c['strategy']['mode']}: {c['strategy']['reason']}",
        "",
        "Teacher probe (accuracy strict / flexible: the '#### X' line only / every answer rule):",
        "",
        "| teacher | kind | eligible | strict | flexible | p50 ms | $ / 1k questions |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for t in c["teacher"].get("scores", []):
        lines.append(
            f"| {t['name']} | {t['kind']} | {'yes' if t['eligible'] else 'no: ' + t['reason']} | "
            f"{_pct(t.get('strict_accuracy'))} | {_pct(t.get('flexible_accuracy'))} | "
            f"{_ms(t.get('latency_p50_s'))} | {_money(t.get('cost_per_1k_questions'))} |"
        )
    lines += [
        "",
        "Student pre-screen (few-shot / zero-shot, strict and flexible):",
        "",
        "| student | params | few-shot strict | few-shot flexible | zero-shot strict | zero-shot flexible | passed |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in c["student"]["prescreen"]:
        lines.append(
            f"| {p['name']} | {p['params'] or '-':,} | {_pct(p.get('fewshot_strict'))} | "
            f"{_pct(p.get('fewshot_flexible'))} | {_pct(p.get('zeroshot_strict'))} | "
            f"{_pct(p.get('zeroshot_flexible'))} | {'yes' if p['passed'] else 'no'} |"
        )
    warnings = [t["format_warning"] for t in c["teacher"].get("scores", []) if t.get("format_warning")]
    warnings += [p["format_warning"] for p in c["student"]["prescreen"] if p.get("format_warning")]
    lines += [""] + [f"> **Answer format:** {w}" for w in warnings]
    return lines + [
        "",
        "## Constraint loop",
        "",
        "```",
        run["loop"]["report"],
        "```",
        "",
        f"Synthesis: {synth['accepted']} examples kept of {synth['samples']} samples "
        f"({synth['questions_covered']} of {synth['questions']} questions covered). "
        f"Training: {training['method']}, {training['steps']} steps, {training['wall_time_s']:.0f} s, "
        f"loss {_num(training['loss_first'])} -> {_num(training['loss_last'])}.",
        "",
    ]


def _ledger_lines(ledger: Mapping[str, Any] | None) -> list[str]:
    """What the job spent, by stage, against its budget and the plan."""
    if not ledger:
        return []
    planned = ledger.get("planned_usd")
    plan = f"; planned ${planned:.2f} on the chosen server (job estimate)" if planned is not None else ""
    lines = [
        "## Cost ledger",
        "",
        f"Spent ${ledger['spent_usd']:.4f} of the ${ledger['budget_usd']:g} budget, "
        f"${ledger['remaining_usd']:.4f} left{plan}.",
        "",
        "| stage | USD | basis |",
        "|---|---:|---|",
    ]
    bases: dict[str, set[str]] = {}
    for entry in ledger["entries"]:
        bases.setdefault(entry["stage"], set()).add(entry["note"] or entry["basis"])
    for stage, usd in ledger["by_stage"].items():
        lines.append(f"| {stage} | {usd:.4f} | {'; '.join(sorted(bases.get(stage, set())))} |")
    return [*lines, ""]


def _cluster_lines(cluster: Mapping[str, Any] | None) -> list[str]:
    if not cluster:
        return []
    price = (
        f"${cluster['hourly_usd']:.2f}/h"
        if cluster.get("hourly_usd") is not None
        else "no price (local stand-in)"
    )
    return [
        f"Provisioned `{cluster['name']}` ({cluster['backend']}, {cluster['server_id']}, {price}), "
        f"launched {cluster['launched_at']}.",
        "",
    ]


def _endpoint_lines(run: Mapping[str, Any]) -> list[str]:
    lines = _ledger_lines(run.get("ledger")) + _cluster_lines(run.get("cluster"))
    if run.get("endpoint"):
        e = run["endpoint"]
        lines += [
            "## Endpoint",
            "",
            f"`{e.get('url')}` serving `{e.get('served_model_name')}` "
            f"({e.get('backend')}, id `{e.get('id')}`); stop it with `stratos stop {e.get('id')}`.",
            "",
        ]
    return lines + [f"- fail-over: {note}" for note in run.get("failovers") or []]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _num(value: float | None) -> str:
    """A figure for people: three decimals (report.json keeps full precision)."""
    return "-" if value is None else f"{value:.3f}"


# --- the stage -----------------------------------------------------------------------------------


class Report(BaseModel):
    markdown: str
    markdown_uri: str
    json_uri: str
    data: dict[str, Any] = Field(description="report.json: the comparison and the run, full precision.")


def _evaluation(evaluation: Evaluation) -> EvalResult:
    return EvalResult.from_dict(json.loads(fetch(evaluation.uri).read_text()))


@task(name="report", task_run_name="report", cache_policy=CONTENT, persist_result=True)
def write_report(
    run: dict[str, Any],
    teacher_eval: Evaluation,
    student_eval: Evaluation,
    server: ServerRow,
    trained: TrainedStudent,
    teacher: ResolvedModel,
    store_uri: str,
) -> Report:
    """Teacher vs student with scores and costs, plus the run's choices; published as reports/<key>/."""
    meta = json.loads(fetch(trained.meta_uri).read_text())
    report = build_report(
        _evaluation(student_eval),
        _evaluation(teacher_eval),
        server.model_dump(),
        meta,
        fetch(trained.model_uri),
        teacher.model,
    )
    report["run"] = run
    markdown = report_markdown(report)
    store, key = from_uri(store_uri), digest("report", run)
    data = store.put_json(f"reports/{key}/report.json", report)
    md = store.put_bytes(f"reports/{key}/report.md", markdown.encode())
    return Report(markdown=markdown, markdown_uri=md.uri, json_uri=data.uri, data=report)

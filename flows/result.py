"""What a `distill` run hands back (DistillResult) and the artifacts it leaves in Prefect.

The result is JSON all the way down (`stratos run --json` prints it): the choices and why, the
constraint loop, the metrics, the artifact URIs and the endpoint. The Prefect artifacts of a run
are the report (markdown), the Pareto plot, and tables of the Pareto front, the teacher probe and
the student pre-screen, so the UI shows the decisions, not only the outcome.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any, Literal

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from flows.loop import LoopOutcome
from stratos.ledger import BudgetExhausted, Ledger
from stratos.spec import DistillSpec
from stratos.storage import fetch
from tasks.evaluate import Evaluation
from tasks.prepare_data import PreparedData
from tasks.report import Report
from tasks.serve import Served
from tasks.synthesize import Strategy, Synthesis
from tasks.train import TrainedStudent

FRONT_ROWS = 25  # rows of the Pareto-front table artifact (the plot shows the whole front)


class DistillResult(BaseModel):
    """The choices and why, the metrics, the artifact URIs and the endpoint of one run."""

    name: str
    status: Literal["served", "trained", "infeasible", "budget_exhausted"]
    choices: dict[str, Any] = Field(
        default_factory=dict, description="server/teacher/student/strategy + reasons"
    )
    loop: dict[str, Any] = Field(
        default_factory=dict, description="constraint-loop iterations and relaxations"
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="accuracies, synthesis and training figures"
    )
    artifacts: dict[str, str | None] = Field(default_factory=dict, description="artifact URIs")
    endpoint: dict[str, Any] | None = None
    failovers: list[str] = Field(default_factory=list)
    ledger: dict[str, Any] | None = Field(
        None, description="What the job spent, stage by stage (stratos.ledger)."
    )
    cluster: dict[str, Any] | None = Field(None, description="The server provisioning launched, if it did.")
    message: str | None = Field(None, description="Why the run stopped early (the budget), when it did.")
    report_markdown: str | None = None


@dataclass
class Products:
    """What the stages after the constraint loop made."""

    data: PreparedData
    strategy: Strategy
    synthesis: Synthesis
    trained: TrainedStudent
    ran_on: str
    teacher_eval: Evaluation
    student_eval: Evaluation
    served: Served | None
    failovers: list[str]
    cluster: dict[str, Any] | None = None


def loop_summary(loop: LoopOutcome) -> dict[str, Any]:
    return {
        "feasible": loop.feasible,
        "report": loop.report(),
        "relaxations": loop.relaxations,
        "iterations": [asdict(a) for a in loop.attempts],
    }


def run_summary(
    spec: DistillSpec, loop: LoopOutcome, made: Products, ledger: dict[str, Any]
) -> dict[str, Any]:
    """The run's choices and figures as JSON (the report's `run` section and the result's body)."""
    assert loop.selection and loop.teacher and loop.student
    teacher, student = loop.teacher, loop.student
    return {
        "name": spec.name,
        "choices": {
            "server": {
                "id": loop.selection.chosen,
                "reason": loop.selection.reason,
                "ran_on": made.ran_on,
                "baselines": loop.selection.baselines,
            },
            "teacher": {
                "name": teacher.chosen,
                "probe_accuracy": teacher.accuracy,
                "reason": teacher.reason,
                "scores": [asdict(s) for s in teacher.scores],
            },
            "student": {
                "name": student.chosen,
                "reason": student.reason,
                "prescreen": student.to_dict()["prescreen"],
            },
            "strategy": made.strategy.model_dump(),
        },
        "loop": loop_summary(loop),
        "metrics": {
            "teacher_accuracy": made.teacher_eval.accuracy,
            "student_accuracy": made.student_eval.accuracy,
            "teacher_strict_accuracy": made.teacher_eval.strict_accuracy,
            "student_strict_accuracy": made.student_eval.strict_accuracy,
            "teacher_flexible_accuracy": made.teacher_eval.flexible_accuracy,
            "student_flexible_accuracy": made.student_eval.flexible_accuracy,
            "test_size": made.student_eval.n,
            "synthesis": made.synthesis.report.to_dict(),
            "training": made.trained.result.to_dict(),
        },
        "endpoint": made.served.endpoint.model_dump(mode="json") if made.served else None,
        "failovers": made.failovers,
        "cluster": made.cluster,
        "ledger": ledger,
    }


def completed(spec: DistillSpec, summary: dict[str, Any], report: Report, made: Products) -> DistillResult:
    return DistillResult(
        name=spec.name,
        status="served" if made.served else "trained",
        choices=summary["choices"],
        loop=summary["loop"],
        metrics=summary["metrics"],
        artifacts={
            "data": made.data.uri,
            "synthesis": made.synthesis.uri,
            "model": made.trained.model_uri,
            "adapter": made.trained.adapter_uri,
            "teacher_evaluation": made.teacher_eval.uri,
            "student_evaluation": made.student_eval.uri,
            "report": report.markdown_uri,
        },
        endpoint=summary["endpoint"],
        failovers=summary["failovers"],
        ledger=summary["ledger"],
        cluster=summary["cluster"],
        report_markdown=report.markdown,
    )


def infeasible(spec: DistillSpec, loop: LoopOutcome) -> DistillResult:
    return DistillResult(
        name=spec.name,
        status="infeasible",
        loop=loop_summary(loop),
        report_markdown="# INFEASIBLE\n\n```\n" + loop.report() + "\n```\n",
    )


def exhausted(loop: LoopOutcome, err: BudgetExhausted, ledger: Ledger) -> DistillResult:
    """The run stopped before it would overspend; what it made is kept for the next run to resume."""
    summary = ledger.summary()
    rows = "\n".join(f"| {stage} | {usd:.4f} |" for stage, usd in summary["by_stage"].items())
    markdown = (
        f"# BUDGET EXHAUSTED: `{loop.spec.name}`\n\n{err}\n\n| stage | USD |\n|---|---:|\n{rows}\n\n"
        f"Spent ${summary['spent_usd']:.4f} of ${summary['budget_usd']:g}.\n"
    )
    return DistillResult(
        name=loop.spec.name,
        status="budget_exhausted",
        loop=loop_summary(loop),
        ledger=summary,
        message=str(err),
        report_markdown=markdown,
    )


def publish_artifacts(result: DistillResult, loop: LoopOutcome) -> None:
    """The report, the Pareto plot and the decision tables as Prefect artifacts of the current run."""
    create_markdown_artifact(
        result.report_markdown or "",
        key="distill-report",
        description=f"Stratos run {result.name}: {result.status}",
    )
    if result.ledger and result.ledger["entries"]:
        spent, budget = result.ledger["spent_usd"], result.ledger["budget_usd"]
        create_table_artifact(
            [_ledger_row(e) for e in result.ledger["entries"]],
            key="cost-ledger",
            description=f"${spent:.4f} of ${budget:g} spent (ledgers/{result.name}.json in the artifact store)",
        )
    choice = loop.selection
    if choice is None or not choice.feasible:
        return
    if choice.plot_uri:
        image = base64.b64encode(fetch(choice.plot_uri).read_bytes()).decode()
        create_markdown_artifact(
            f"![Pareto front](data:image/png;base64,{image})",
            key="pareto-front",
            description=f"server selection: {choice.chosen}",
        )
    front = [
        {
            "server": r.id,
            "hardware": round(r.hardware, 1),
            "$/h": round(r.cost_per_hour, 3),
            "rtt ms": round(r.latency_ms, 1),
            "GPU GB": round(r.total_gpu_memory_gb),
            "chosen": r.id == choice.chosen,
        }
        for r in choice.front[:FRONT_ROWS]
    ]
    create_table_artifact(
        front,
        key="pareto-front-table",
        description=f"Pareto front, fail-over order ({len(choice.front)} servers)",
    )
    if loop.teacher:
        create_table_artifact(
            [_teacher_row(s) for s in loop.teacher.scores],
            key="teacher-probe",
            description=loop.teacher.reason,
        )
    if loop.student:
        create_table_artifact(
            [_prescreen_row(p) for p in loop.student.to_dict()["prescreen"]],
            key="student-prescreen",
            description=loop.student.reason,
        )


def _ledger_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": entry["stage"],
        "item": entry["item"],
        "USD": round(entry["usd"], 6),
        "basis": entry["basis"],
        "tokens in/out": f"{entry['prompt_tokens']}/{entry['completion_tokens']}",
        "seconds": round(entry["seconds"], 1),
        "note": entry["note"],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _teacher_row(score: Any) -> dict[str, Any]:
    return {
        "teacher": score.name,
        "kind": score.kind,
        "eligible": score.eligible,
        "strict": _pct(score.strict_accuracy),
        "flexible": _pct(score.flexible_accuracy),
        "p50 ms": None if score.latency_p50_s is None else round(score.latency_p50_s * 1000),
        "$ per 1k questions": None
        if score.cost_per_1k_questions is None
        else round(score.cost_per_1k_questions, 4),
        "reason": score.reason,
    }


def _prescreen_row(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "student": p["name"],
        "params": p["params"],
        "few-shot strict": _pct(p["fewshot_strict"]),
        "few-shot flexible": _pct(p["fewshot_flexible"]),
        "zero-shot strict": _pct(p["zeroshot_strict"]),
        "zero-shot flexible": _pct(p["zeroshot_flexible"]),
        "passed": p["passed"],
    }

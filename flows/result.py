"""What a `distill` run hands back (DistillResult) and the report it leaves in Prefect."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from stratos.spec import DistillSpec
from tasks.report import report_markdown as comparison_markdown


class DistillResult(BaseModel):
    """The choices and why, the metrics, the artifact URIs and the endpoint of one run."""

    name: str
    status: Literal["deployed", "trained", "infeasible"]
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
    report_markdown: str | None = None

    @staticmethod
    def loop_summary(loop) -> dict[str, Any]:
        return {"feasible": loop.feasible, "report": loop.report(), "relaxations": loop.relaxations,
                "iterations": [a.__dict__ for a in loop.attempts]}  # fmt: skip

    @classmethod
    def infeasible(cls, spec: DistillSpec, loop) -> DistillResult:
        return cls(name=spec.name, status="infeasible", loop=cls.loop_summary(loop),
                   report_markdown="# INFEASIBLE\n\n```\n" + loop.report() + "\n```\n")  # fmt: skip

    @classmethod
    def summary(cls, spec, loop, strategy, synth, trained, evals, endpoint, dispatcher) -> dict[str, Any]:
        """The run's choices and figures as JSON (part of the report and of the result)."""
        selection, teacher, student = loop.selection, loop.teacher, loop.student
        return {
            "name": spec.name,
            "choices": {
                "server": {
                    "id": selection.chosen,
                    "reason": selection.reason,
                    "ran_on": trained.get("ran_on"),
                    "baselines": selection.baselines,
                },
                "teacher": {
                    "name": teacher.chosen,
                    "probe_accuracy": teacher.accuracy,
                    "reason": teacher.reason,
                },
                "student": {
                    "name": student.chosen,
                    "reason": student.reason,
                    "prescreen": [p.__dict__ for p in student.prescreen],
                },
                "strategy": strategy,
            },  # fmt: skip
            "loop": cls.loop_summary(loop),
            "metrics": {
                "teacher_accuracy": evals["teacher"]["accuracy"],
                "student_accuracy": evals["student"]["accuracy"],
                "test_size": evals["student"]["n"],
                "synthesis": synth["report"],
                "training": trained["result"],
            },
            "endpoint": (endpoint or {}).get("endpoint"),
            "failovers": dispatcher.failovers,
        }

    @classmethod
    def completed(cls, spec, summary, report, data, synth, trained, evals, endpoint) -> DistillResult:
        return cls(
            name=spec.name,
            status="deployed" if endpoint else "trained",
            choices=summary["choices"],
            loop=summary["loop"],
            metrics=summary["metrics"],
            artifacts={
                "data": data["uri"],
                "synthesis": synth["uri"],
                "model": trained["model_uri"],
                "adapter": trained.get("adapter_uri"),
                "teacher_evaluation": evals["teacher"]["uri"],
                "student_evaluation": evals["student"]["uri"],
                "report": report["markdown_uri"],
            },  # fmt: skip
            endpoint=summary["endpoint"],
            failovers=summary["failovers"],
            report_markdown=report["markdown"],
        )


def report_markdown(report: dict[str, Any]) -> str:
    """The run report: choices with reasons, the constraint loop, teacher vs student, the endpoint."""
    run = report["run"]
    c = run["choices"]
    synth, training = run["metrics"]["synthesis"], run["metrics"]["training"]
    lines = [f"# Stratos run `{run['name']}`", "", "## Choices", "",
             f"- **Server** `{c['server']['id']}`: {c['server']['reason']}",
             f"- **Teacher** `{c['teacher']['name']}`: {c['teacher']['reason']}",
             f"- **Student** `{c['student']['name']}`: {c['student']['reason']}",
             f"- **Strategy** {c['strategy']['mode']}: {c['strategy']['reason']}", "",
             "| student | params | few-shot | zero-shot | passed |", "|---|---:|---:|---:|---|"]  # fmt: skip
    for p in c["student"]["prescreen"]:
        lines.append(f"| {p['name']} | {p['params'] or '-':,} | {p['fewshot_accuracy']:.3f} | "
                     f"{p['zeroshot_accuracy']:.3f} | {'yes' if p['passed'] else 'no'} |")  # fmt: skip
    lines += ["", "## Constraint loop", "", "```", run["loop"]["report"], "```", "",
              f"Synthesis: {synth['accepted']} examples kept of {synth['samples']} samples "
              f"({synth['questions_covered']} of {synth['questions']} questions covered). "
              f"Training: {training['method']}, {training['steps']} steps, {training['wall_time_s']:.0f} s, "
              f"loss {training['loss_first']} -> {training['loss_last']}.", ""]  # fmt: skip
    lines.append(comparison_markdown(report))
    if run.get("endpoint"):
        e = run["endpoint"]
        lines += ["## Endpoint", "", f"`{e.get('url')}` serving `{e.get('served_model_name')}` "
                  f"({e.get('backend')}, id `{e.get('id')}`); stop it with `stratos stop {e.get('id')}`.", ""]  # fmt: skip
    for note in run.get("failovers") or []:
        lines.append(f"- fail-over: {note}")
    return "\n".join(lines)


def write_report_artifacts(result: DistillResult, selection, markdown: str | None) -> None:
    """The report and the Pareto plot as Prefect artifacts of the current run."""
    from prefect.artifacts import create_markdown_artifact

    from stratos.plots import plot_front

    create_markdown_artifact(markdown or result.report_markdown or "", key="distill-report",
                             description=f"Stratos run {result.name}: {result.status}")  # fmt: skip
    if selection is None or not selection.feasible:
        return
    with tempfile.TemporaryDirectory(prefix="stratos-plot-") as tmp:
        png = plot_front(selection, Path(tmp) / "pareto.png").read_bytes()
    image = base64.b64encode(png).decode()
    create_markdown_artifact(f"![Pareto front](data:image/png;base64,{image})", key="pareto-front",
                             description=f"server selection: {selection.chosen}")  # fmt: skip

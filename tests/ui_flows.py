"""A tiny flow that suspends for a person's answer, for tests/test_ui.py.

It stands in for the relaxation approval (`relax.approval: ui`) until the
`distill` flow has it: the run suspends with a pydantic input model, which the
Prefect UI renders as a form behind the run's Resume button; suspending ends
the flow run's process, so no worker is held while it waits, and the answer
comes back when the worker starts the run again.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model


class RelaxApproval(RunInput):
    """What to do now that no student passes the pre-screen."""

    decision: Literal["approve", "stop"] = Field(
        "approve", title="Decision", description="approve: apply the proposed step; stop: end the run."
    )
    budget_usd: float = Field(200.0, gt=0, title="Budget (USD)", description="The budget to continue with.")


def ask(model: type[RunInput], description: str, **proposed: Any) -> type[RunInput]:
    """`model` with `proposed` values pre-filled and `description` (markdown) above the form.

    `RunInput.with_initial_data(**values)` rebuilds each pre-filled field from its bare type: the UI
    then loses its title, description and bounds ("Budget Usd", no gt=0). Copying the field keeps them.
    """
    fields = {}
    for name, value in proposed.items():
        info = copy.copy(model.model_fields[name])
        info.default = value
        fields[name] = (info.annotation, info)
    return create_model(model.__name__, __base__=model, **fields).with_initial_data(description=description)


@flow(name="approval-demo", persist_result=True)  # suspending needs persisted results
def approval_demo() -> str:
    """Suspend for an approval, then record the answer as an artifact."""
    question = ask(
        RelaxApproval,
        "**No student passed the pre-screen.** Proposed step: `larger_student`.",
        budget_usd=300.0,
    )
    answer = suspend_flow_run(wait_for_input=question, timeout=600, key="relax-step-1")
    create_markdown_artifact(
        f"decision: {answer.decision}, budget_usd: {answer.budget_usd:g}", key="approval-answer"
    )
    return answer.decision

"""Stage 3, select server: the Pareto Front Grid over the catalogs, as a typed choice later stages read.

The algorithm is stratos.pfg (the same code `stratos plan` runs); this stage loads the catalogs
the spec names (their content hashes are inputs, so an edited catalog re-runs it), chooses, and
hands on a ServerChoice: the chosen server's row as plain values, the front in fail-over order,
the baselines and their scores, and what eliminated what. The Pareto plot is published to the
artifact store, where the report picks it up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel, Field

from stratos import pfg
from stratos.catalog import load_catalogs
from stratos.files import FileRef
from stratos.job_cost import JobProfile
from stratos.jobs import CONTENT, digest
from stratos.plots import plot_front
from stratos.spec import Constraints, ServerSettings
from stratos.storage import from_uri


class ServerRow(BaseModel):
    """One server as later stages need it (sizing models, pricing, the roofline), in native types."""

    id: str
    accelerator: str
    gpu_count: int
    total_gpu_memory_gb: float
    tflops: float
    bandwidth_gbs: float
    cost_per_hour: float
    latency_ms: float
    hardware: float
    job_usd: float | None = Field(
        None, description="The planned job cost on this server (stratos.job_estimate)."
    )

    @classmethod
    def of(cls, row: Any) -> ServerRow:
        """From a row of pfg.Selection.servers (numpy scalars become Python numbers)."""
        values = {name: row[name] for name in cls.model_fields if name in row}
        return cls(**{name: v.item() if hasattr(v, "item") else v for name, v in values.items()})


class ServerChoice(BaseModel):
    """What server selection decided and why."""

    method: str
    chosen: str | None
    reason: str
    front: list[ServerRow] = Field(
        default_factory=list,
        description="The chosen server, then the rest of the front nearest the ideal first (fail-over order).",
    )
    feasible_count: int = 0
    baselines: dict[str, str | None] = Field(default_factory=dict)
    scores: dict[str, float] = Field(
        default_factory=dict, description="Closeness to the ideal of each method's pick."
    )
    eliminated: dict[str, int] = Field(
        default_factory=dict, description="Servers each hard constraint ruled out."
    )
    constraint_text: dict[str, str] = Field(default_factory=dict)
    nearest_feasible: list[dict[str, Any]] = Field(default_factory=list)
    plot_uri: str | None = Field(None, description="The Pareto plot (PNG) in the artifact store.")

    @property
    def feasible(self) -> bool:
        return self.chosen is not None

    @property
    def row(self) -> ServerRow:
        """The chosen server's row (only for a feasible choice)."""
        assert self.front and self.front[0].id == self.chosen, "no server was chosen"
        return self.front[0]


def choice_of(
    selection: pfg.Selection, weights: tuple[float, float, float], plot_uri: str | None = None
) -> ServerChoice:
    """The typed record of a pfg.Selection."""
    rows = selection.servers.set_index("id", drop=False)
    return ServerChoice(
        method=selection.method,
        chosen=selection.chosen,
        reason=selection.reason,
        front=[ServerRow.of(rows.loc[sid]) for sid in selection.front_ranked()],
        feasible_count=int(selection.servers["feasible"].sum()),
        baselines=selection.baselines,
        scores=pfg.selection_scores(selection, weights) if selection.feasible else {},
        eliminated=selection.eliminated,
        constraint_text=selection.constraint_text,
        nearest_feasible=selection.nearest_feasible,
        plot_uri=plot_uri,
    )


@task(name="select-server", task_run_name="select-server", cache_policy=CONTENT, persist_result=True)
def select_server(
    constraints: Constraints,
    servers: ServerSettings,
    catalogs: list[FileRef],
    store_uri: str,
    job: JobProfile | None = None,
) -> ServerChoice:
    """Load the catalogs, choose a server by the spec's method (PFG), publish the Pareto plot.

    `job` is the job the spec describes (stratos.job_profile): with it each server's estimated job
    cost is its cost axis (servers.cost_objective: job) and what the budget is checked against.
    """
    table, _ = load_catalogs([Path(c.path) for c in catalogs])
    selection = pfg.select_server(table, constraints, servers, with_baselines=True, job=job)
    if not selection.feasible:
        return choice_of(selection, servers.weights)
    key = digest(constraints.model_dump(mode="json"), servers.model_dump(mode="json"), catalogs, str(job))
    with tempfile.TemporaryDirectory(prefix="stratos-plot-") as tmp:
        png = plot_front(selection, Path(tmp) / "pareto.png")
        plot = from_uri(store_uri).put_file(f"servers/{key}/pareto.png", png)
    return choice_of(selection, servers.weights, plot.uri)

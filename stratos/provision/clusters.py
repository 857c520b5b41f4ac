"""The cluster registry: one JSON record per cluster Stratos launched, under $STRATOS_HOME/clusters/.

A record is written (atomically) before the launch starts, so a run killed mid-launch still leaves
something `stratos down` can find; it is updated when the cluster is up, failed or down, and kept
afterwards as the run's account of what it launched and why it ended.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from stratos.files import write_json_atomic
from stratos.storage import stratos_home

ClusterStatus = Literal["launching", "up", "failed", "down"]


class ClusterRecord(BaseModel):
    """A cluster Stratos launched for a run: where, what it costs, and what became of it."""

    name: str = Field(description="Cluster name (SkyPilot's, or the local stand-in's).")
    backend: Literal["skypilot", "local"]
    run_name: str = Field(description="The spec's name of the run that launched it.")
    server_id: str = Field(description="Catalog id of the server it runs on.")
    pool: str = Field(description="Prefect work pool its worker polls.")
    status: ClusterStatus = "launching"
    launched_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    hourly_usd: float | None = Field(
        None, description="Hourly price as SkyPilot reports it for the launched resources; none locally."
    )
    instance_type: str | None = Field(None, description="Instance type SkyPilot launched.")
    region: str | None = Field(None, description="Region (and zone) SkyPilot launched in.")
    pid: int | None = Field(None, description="Local stand-in: the worker job's process id.")
    log_path: str | None = Field(None, description="Where the launch (or local worker) wrote its output.")
    reason: str | None = Field(None, description="Why a launch failed or the cluster was downed.")


def clusters_dir() -> Path:
    path = stratos_home() / "clusters"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_record(record: ClusterRecord) -> ClusterRecord:
    write_json_atomic(clusters_dir() / f"{record.name}.json", record.model_dump(mode="json"))
    return record


def load_record(name: str) -> ClusterRecord | None:
    path = clusters_dir() / f"{name}.json"
    return ClusterRecord.model_validate_json(path.read_text()) if path.is_file() else None


def list_records() -> list[ClusterRecord]:
    """Every recorded cluster, oldest launch first."""
    records = []
    for path in clusters_dir().glob("*.json"):
        try:
            records.append(ClusterRecord.model_validate_json(path.read_text()))
        except (OSError, ValueError):
            continue  # a file that is not one of ours
    return sorted(records, key=lambda r: r.launched_at)


def find_records(run_or_cluster: str) -> list[ClusterRecord]:
    """The records of one cluster (by name) or of every cluster a run launched (by run name)."""
    records = list_records()
    by_name = [r for r in records if r.name == run_or_cluster]
    return by_name or [r for r in records if r.run_name == run_or_cluster]


def mark(record: ClusterRecord, status: ClusterStatus, **fields: object) -> ClusterRecord:
    """Record a new status (and when a cluster ended), with any fields that came with it."""
    ended = datetime.now(UTC) if status in ("failed", "down") else None
    return save_record(record.model_copy(update={"status": status, "ended_at": ended, **fields}))

"""What `stratos clusters` and `stratos down` do: list the registry, refresh it, tear clusters down."""

from __future__ import annotations

from stratos.provision.clusters import ClusterRecord, find_records, list_records
from stratos.provision.launchers import LAUNCHERS, Launcher
from stratos.provision.sky import SkyHelperError, SkyNotInstalled
from stratos.spec import ProvisionSettings

DONE = ("down", "failed")


def _launcher(backend: str) -> Launcher:
    return LAUNCHERS[backend](ProvisionSettings(backend=backend))


def refreshed_records() -> list[ClusterRecord]:
    """Every record, with live ones checked against their backend (SkyPilot's only if its venv exists)."""
    records = {r.name: r for r in list_records()}
    for backend in sorted({r.backend for r in records.values() if r.status not in DONE}):
        try:
            records.update({r.name: r for r in _launcher(backend).status()})
        except (SkyNotInstalled, SkyHelperError):
            continue  # listing must work without SkyPilot; the records then say what was last known
    return sorted(records.values(), key=lambda r: r.launched_at)


def down_clusters(target: str) -> list[ClusterRecord]:
    """Down the cluster named `target`, or every cluster of the run named `target`."""
    records = find_records(target)
    if not records:
        known = sorted({r.name for r in list_records()} | {r.run_name for r in list_records()})
        hint = f"known: {', '.join(known)}" if known else "none is recorded"
        raise ValueError(f"no cluster or run named '{target}' ({hint}); `stratos clusters` lists them")
    downed = []
    for record in records:
        # A failed launch was downed already; downing again is harmless and catches what it missed.
        downed.append(_launcher(record.backend).down(record.name, reason="stratos down") or record)
    return downed


def cluster_table(records: list[ClusterRecord]) -> str:
    rows = [("cluster", "backend", "run", "server", "status", "$/h", "launched", "reason")]
    for r in records:
        price = f"{r.hourly_usd:.2f}" if r.hourly_usd is not None else "-"
        launched = r.launched_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        reason = (r.reason or "")[:60]
        rows.append((r.name, r.backend, r.run_name, r.server_id, r.status, price, launched, reason))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )

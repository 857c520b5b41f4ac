"""Stratos flows: `distill` (the pipeline) and `stratos-stage` (one GPU stage on a worker).

`run_flow(spec)` is the Python entry point: a DistillSpec, a spec dict or a path to a YAML
spec in, a DistillResult out. It checks the inputs first (`preflight`, stratos/preflight.py:
everything checkable in a second, before Prefect starts), then runs `distill`
against the run's Prefect API (flows/server.py: PREFECT_API_URL, else a temporary server that
dies with this process), marking runs of killed processes crashed on the way in. Interrupted
(Ctrl-C), it stops the processes it started, marks its flow run crashed and re-raises
KeyboardInterrupt; the same call resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psutil
from prefect import tags

import stratos  # noqa: F401  (offline environment defaults before Prefect is imported)
from blocks.storage import ArtifactStoreBlock
from flows.checks import preflight_done
from flows.distill import DistillResult, distill
from flows.provision import check_provision
from flows.server import mark_orphans_crashed, owner_tags, prefect_api
from stratos.lifetime import kill_tree
from stratos.preflight import preflight
from stratos.serving.endpoints import EndpointRecord, registry_dir, stop_endpoint
from stratos.spec import DistillSpec, SpecError, load_spec, parse_spec
from stratos.storage import StorageError, StoreUnreachable

log = logging.getLogger(__name__)


def run_flow(spec: DistillSpec | dict[str, Any] | str | Path, checked: bool = False) -> DistillResult:
    """Run the `distill` flow on a spec and return its DistillResult (raises on a failed run).

    The spec passes `preflight` first, unless `checked` says the caller just ran it (the CLI
    does, before it imports this package, so a bad input fails before torch and Prefect load).
    """
    if isinstance(spec, str | Path):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    if not checked:
        check_provision(spec)  # what no server choice fixes, before the slower service checks
    for note in [] if checked else preflight(spec):
        log.warning(note)
    try:
        with prefect_api():
            mark_orphans_crashed()
            if spec.storage.block:
                check_block_store(spec.storage.block)
            with tags(*owner_tags()), preflight_done():
                return distill(spec)
    except KeyboardInterrupt:
        stop_started_processes()  # the Prefect server is already stopped: what is left, this run started
        raise


def check_block_store(name: str) -> None:
    """The artifact store a storage block names is reachable (the block is read from the Prefect API)."""
    try:
        store = ArtifactStoreBlock.load(name).store()
    except ValueError as err:  # no such block
        raise SpecError(f"storage.block = '{name}': {err}; create it or fix the name") from None
    try:
        store.check()
    except StoreUnreachable:
        raise  # a service that does not answer (exit 4), not a bad input
    except StorageError as err:
        raise SpecError(f"storage.block = '{name}': {err}") from None


def stop_started_processes() -> list[int]:
    """Stop what this run started and has not handed over: endpoints it was bringing up, workers.

    Every descendant of this process: a run's children are its own until it finishes, and an
    endpoint a previous run left serving is not among them. Endpoint records are dropped too.
    """
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    for path in registry_dir().glob("*.json"):
        try:
            record = EndpointRecord.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue
        if record.pid in children:
            stop_endpoint(record.id)
    stopped = [pid for child in children for pid in kill_tree(child)]
    if stopped:
        log.info("stopped %d process(es) this run had started", len(stopped))
    return stopped


__all__ = ["DistillResult", "preflight", "run_flow"]

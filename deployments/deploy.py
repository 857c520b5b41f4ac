"""Register the `distill` flow's deployments on a Prefect server: one for manual/UI runs, one on a schedule.

    stratos deploy SPEC.yaml [--pool stratos-local] [--cron "0 3 * * *"] [--name redistill]
    python deployments/deploy.py SPEC.yaml [same options]

What it registers, both on the work pool `--pool` (a `process` pool, created
if it does not exist), both running `flows/distill.py:distill` from this
checkout, both with the validated spec as their `spec` parameter:

    distill/distill      no schedule: runs start from the UI (the spec is the
                         parameter form, pre-filled with this spec), from
                         `prefect deployment run distill/distill`, or from Python
    distill/<name>       the same spec re-run on `--cron` (default 03:00 daily,
                         server time zone UTC unless `--timezone`); `<name>` is
                         `redistill` unless given, so several saved specs can each
                         have their own schedule

A scheduled re-run is cheap when nothing changed: every stage is cached on its
inputs and source, so an unchanged spec over unchanged data and models only
re-checks the cache (and the live endpoint); a retrained teacher, a changed
dataset or an edited stage re-runs from that stage on.

Re-running the command updates both deployments in place (same names). A
server must be running and PREFECT_API_URL must point at it: deployments made
against Prefect's temporary embedded server would vanish with it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/distill.py:distill"
DEFAULT_POOL = "stratos-local"
DEFAULT_CRON = "0 3 * * *"
DEFAULT_NAME = "redistill"


def _check_api_url() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError(
            "PREFECT_API_URL is not set: deployments need a running Prefect server. Start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api (or your server's URL)"
        )


def ensure_process_pool(pool: str) -> None:
    """Create `pool` as a process work pool unless it exists (an existing pool of any type is kept)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))


def spec_parameters(spec_path: str | Path) -> dict[str, Any]:
    """The spec as the deployments' `spec` parameter: validated, runnable, paths made absolute."""
    from flows.distill import check_runnable
    from stratos.spec import load_spec

    spec = load_spec(spec_path)  # relative catalog/dataset paths resolve against the spec's folder
    check_runnable(spec)  # a spec missing its task or candidates fails now, not at 3 am
    # Only what the file sets: defaults stay the code's, as with `stratos run SPEC.yaml`.
    return {"spec": spec.model_dump(mode="json", exclude_unset=True)}


def deploy(
    spec_path: str | Path,
    pool: str | None = None,
    cron: str | None = None,
    name: str | None = None,
    timezone: str | None = None,
) -> list[str]:
    """Register `distill/distill` and the scheduled `distill/<name>` for a spec; returns their names."""
    from prefect.client.schemas.schedules import CronSchedule

    from flows.distill import distill

    pool, cron, name = pool or DEFAULT_POOL, cron or DEFAULT_CRON, name or DEFAULT_NAME
    if name == "distill":
        raise ValueError(
            "--name 'distill' is the unscheduled deployment's name; pick another, e.g. 'nightly'"
        )
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise ValueError(f"--cron {cron!r} (time zone {timezone or 'UTC'}) is not a valid schedule; "
                         "e.g. '0 3 * * *' for 03:00 every day, and an IANA zone like Europe/Berlin") from None  # fmt: skip
    parameters = spec_parameters(spec_path)
    _check_api_url()
    ensure_process_pool(pool)
    source = distill.from_source(str(REPO_ROOT), ENTRYPOINT)
    spec_name = parameters["spec"].get("name", "stratos-run")
    common = {
        "work_pool_name": pool,
        "parameters": parameters,
        "tags": ["stratos"],
        "print_next_steps": False,
    }
    source.deploy(
        "distill", description=f"Distil on demand; the form starts from spec '{spec_name}'.", **common
    )
    schedule = {"cron": cron, "timezone": timezone} if timezone else {"cron": cron}
    source.deploy(name, description=f"Re-distil spec '{spec_name}' on '{cron}'; unchanged stages are cached.",
                  **schedule, **common)  # fmt: skip
    return ["distill/distill", f"distill/{name}"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `stratos deploy` options (shared with this script's own command line)."""
    parser.add_argument("spec", help="path to the YAML DistillSpec the deployments run")
    parser.add_argument(
        "--pool", default=DEFAULT_POOL, help=f"work pool (default {DEFAULT_POOL}; created if missing)"
    )
    parser.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"schedule of the re-run (default '{DEFAULT_CRON}')"
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"scheduled deployment's name (default {DEFAULT_NAME})"
    )
    parser.add_argument("--timezone", help="time zone of the cron schedule, e.g. Europe/Berlin (default UTC)")


def run(args: argparse.Namespace) -> int:
    """Register the deployments and say how to run them."""
    names = deploy(args.spec, pool=args.pool, cron=args.cron, name=args.name, timezone=args.timezone)
    for deployment in names:
        print(f"registered {deployment} on work pool '{args.pool}'")
    print(f"start a worker: prefect worker start --pool {args.pool}\n"
          f"run now:        prefect deployment run {names[0]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere in the checkout
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(cli)
    sys.exit(run(cli.parse_args()))

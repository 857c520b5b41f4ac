"""Register the `distill` flow's deployments on a Prefect server: one for manual/UI runs, one on a schedule.

    stratos deploy SPEC.yaml [--pool stratos-local] [--cron "0 3 * * *"] [--name redistill] [--timezone ZONE]
    python deployments/deploy.py SPEC.yaml [same options]

What it registers, both on the work pool `--pool` (a `process` pool, created
if it does not exist), both running `flows/distill.py:distill` from this
checkout, both with the validated spec as their `spec` parameter:

    distill/distill      no schedule: runs start from the UI (the spec is the
                         parameter form, pre-filled with this spec; Quick run
                         starts it as saved), from `prefect deployment run
                         distill/distill`, or from Python
    distill/<name>       the same spec re-run on `--cron` (default 03:00 daily)
                         in `--timezone` (an IANA zone, default UTC); `<name>` is
                         `redistill` unless given, so several saved specs can each
                         have their own schedule

Everything is checked before anything is registered (name, cron, time zone,
spec, server), so a bad option never leaves one deployment registered and the
other not.

The UI form is the run spec (stratos.spec.RunSpec): task, teachers and
students are marked required, every default is shown, the essentials come
first. Nothing is required at the top level, because the deployment carries
the saved spec: that is what makes Quick run start at once instead of opening
the form.

A scheduled re-run is cheap when nothing changed: every stage is cached on its
inputs and source, so an unchanged spec over unchanged data and models only
re-checks the cache (and the live endpoint); a retrained teacher, a changed
dataset or an edited stage re-runs from that stage on.

Re-running the command updates both deployments in place (same names). A
server must be running and PREFECT_API_URL must point at it: deployments made
against Prefect's temporary embedded server would vanish with it.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.deployments.runner import deploy as register
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL
from prefect.utilities.callables import ParameterSchema, generate_parameter_schema

from flows.distill import distill
from flows.saved import distill_saved
from stratos.cli import DEFAULT_CRON, DEFAULT_NAME, DEFAULT_POOL
from stratos.spec import RunSpec, load_spec, require_runnable

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/distill.py:distill"
SAVED_ENTRYPOINT = "flows/saved.py:distill_saved"


def _check_api_url() -> None:
    if not PREFECT_API_URL.value():
        raise ValueError(
            "PREFECT_API_URL is not set: deployments need a running Prefect server. Start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api (or your server's URL)"
        )


def check_schedule(cron: str, timezone: str | None) -> Cron:
    """The `redistill` schedule, or a ValueError naming the bad option and an example."""
    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise ValueError(
            f"--cron {cron!r} is not a valid cron expression; e.g. '0 3 * * *' for 03:00 every day"
        ) from None
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise ValueError(
            f"--timezone {timezone!r} is not a time zone Prefect knows; give an IANA name such as "
            "Europe/Berlin or America/New_York (default UTC)"
        ) from None
    return Cron(cron, timezone=timezone)


def ensure_process_pool(pool: str) -> None:
    """Create `pool` as a process work pool unless it exists (an existing pool of any type is kept)."""
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))


def spec_parameters(spec_path: str | Path) -> dict[str, Any]:
    """The spec as the deployments' `spec` parameter: validated, runnable, paths made absolute."""
    spec = load_spec(spec_path)  # relative catalog/dataset paths resolve against the spec's folder
    require_runnable(spec)  # a spec missing its task or candidates fails now, not at 3 am
    # Only what the file sets: defaults stay the code's, as with `stratos run SPEC.yaml`.
    return {"spec": spec.model_dump(mode="json", exclude_unset=True)}


def form_schema() -> ParameterSchema:
    """The deployments' parameter form: `spec` as a RunSpec, with nothing required at the top level.

    The flow's own signature takes a DistillSpec (task optional, for `stratos
    plan`), which the UI showed with every field "(Optional)". Both Prefect UIs
    open the form instead of starting a Quick run whenever the schema's top-level
    `required` is non-empty; the deployment always carries the saved spec, so
    `spec` need not be required there.
    """
    spec = inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunSpec)
    schema = generate_parameter_schema(inspect.Signature([spec]), {})
    # Every field set explicitly: registration sends only set fields, and the V1 UI shows a bare JSON
    # editor instead of the form when the schema lacks `"type": "object"`.
    return ParameterSchema(
        title="Parameters",
        type="object",
        properties=schema.properties,
        required=[],
        definitions=schema.definitions,
    )


def _deployment(name: str, description: str, **options: Any) -> RunnerDeployment:
    """One deployment of the `distill` flow from this checkout, with the run-spec form."""
    source = distill.from_source(str(REPO_ROOT), ENTRYPOINT)
    deployment = source.to_deployment(name, description=description, tags=["stratos"], **options)
    # to_deployment derives the schema from the flow's signature and takes no other; set the form's.
    deployment._parameter_openapi_schema = form_schema()
    return deployment


def deploy(
    spec_path: str | Path,
    pool: str | None = None,
    cron: str | None = None,
    name: str | None = None,
    timezone: str | None = None,
) -> list[str]:
    """Register `distill/distill`, the scheduled `distill/<name>` and the short `distill-saved/saved` for a
    spec; returns their names."""
    pool, cron, name = pool or DEFAULT_POOL, cron or DEFAULT_CRON, name or DEFAULT_NAME
    if name == "distill":
        raise ValueError(
            "--name 'distill' is the unscheduled deployment's name; pick another, e.g. 'nightly'"
        )
    schedule = check_schedule(cron, timezone)
    parameters = spec_parameters(spec_path)
    _check_api_url()
    spec_name = parameters["spec"].get("name", "stratos-run")
    zone = timezone or "UTC"
    deployments = [
        _deployment(
            "distill",
            f"Distil on demand; the form starts from spec '{spec_name}'.",
            parameters=parameters,
        ),
        _deployment(
            name,
            f"Re-distil spec '{spec_name}' on '{cron}' ({zone}); unchanged stages are cached.",
            parameters=parameters,
            schedules=[schedule],
        ),
    ]
    saved = distill_saved.from_source(str(REPO_ROOT), SAVED_ENTRYPOINT).to_deployment(
        "saved",
        description=f"Run the saved spec '{spec_name}' with a few fields changed (name, budget, limits, size).",
        parameters={"spec_path": str(Path(spec_path).resolve())},
        tags=["stratos"],
    )
    ensure_process_pool(pool)
    register(
        *deployments,
        saved,
        work_pool_name=pool,
        build=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
    return ["distill/distill", f"distill/{name}", "distill-saved/saved"]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere in the checkout
    from stratos.cli import main  # the `stratos deploy` command line, the one place its options live

    sys.exit(main(["deploy", *sys.argv[1:]]))

"""SkyPilot's optimizer on Stratos's tasks, offline: run with the SkyPilot venv's python, never Stratos's.

stdin: {"catalogs": {cloud: vms.csv path}, "accelerators": csv path, "tasks": [SkyPilot task dicts]}
stdout, last line: {"catalog_dir": ..., "catalog_version": ..., "plans": [one object per task]}

Run it with HOME pointing at an empty temporary folder: the catalogs are copied to SkyPilot's
catalog directory there (`~/.sky/catalogs/<schema version>/<cloud>/vms.csv`), where SkyPilot takes
hand-placed files as user-modified and never downloads over them. The clouds of those catalogs are
enabled by replacing SkyPilot's enabled-cloud lookup, as SkyPilot's own tests do; nothing reaches
a cloud. Standard library and sky only: this file must not import Stratos.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

os.environ.pop("SKY_RUNTIME_DIR", None)  # SkyPilot would root '~' there instead of at our HOME


def place_catalogs(catalogs: dict[str, str], accelerators: str) -> str:
    """Copy the catalogs where SkyPilot reads them; returns that versioned directory."""
    from sky.skylet import constants

    root = os.path.join(os.path.expanduser("~"), ".sky", "catalogs", constants.CATALOG_SCHEMA_VERSION)
    for cloud, path in catalogs.items():
        os.makedirs(os.path.join(root, cloud), exist_ok=True)
        shutil.copyfile(path, os.path.join(root, cloud, "vms.csv"))
    # The optimizer also reads the accelerator -> clouds table.
    os.makedirs(os.path.join(root, "common"), exist_ok=True)
    shutil.copyfile(accelerators, os.path.join(root, "common", "accelerators.csv"))
    return root


def enable_clouds(names: list[str]) -> None:
    """Make SkyPilot see exactly these clouds as enabled (it would otherwise run `sky check`)."""
    from sky import check
    from sky.utils import registry

    enabled = [registry.CLOUD_REGISTRY.from_str(name) for name in names]
    check.get_cached_enabled_clouds_or_refresh = lambda *args, **kwargs: enabled
    check.check_capability = lambda *args, **kwargs: None


def plan(task_config: dict) -> dict:
    """SkyPilot's choice for one task (cheapest feasible), or the error it raised."""
    import sky
    from sky import optimizer

    try:
        task = sky.Task.from_yaml_config(task_config)
        with sky.Dag() as dag:
            dag.add(task)
        optimizer.Optimizer.optimize(dag, quiet=True)
    except Exception as err:  # noqa: BLE001 - reported to Stratos, which says what it means
        return {"ok": False, "error_type": type(err).__name__, "message": str(err)[:2000]}
    best = task.best_resources
    return {
        "ok": True,
        "cloud": str(best.cloud).lower(),
        "instance_type": best.instance_type,
        "region": best.region,
        "zone": best.zone,
        "accelerators": best.accelerators,
        "use_spot": best.use_spot,
        "hourly_usd": best.get_cost(3600),
    }


def main() -> int:
    request = json.load(sys.stdin)
    root = place_catalogs(request["catalogs"], request["accelerators"])
    enable_clouds(sorted(request["catalogs"]))
    from sky.skylet import constants

    plans = [plan(task) for task in request["tasks"]]
    print(
        json.dumps({"catalog_dir": root, "catalog_version": constants.CATALOG_SCHEMA_VERSION, "plans": plans})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""From a catalog server to the SkyPilot task that runs its Prefect worker, and the cluster's name.

The task pins every resource to the catalog row Stratos chose (cloud, instance type, region, zone,
accelerators in the cloud's own spelling, spot or not), so SkyPilot's optimizer has exactly one
candidate: the one Stratos priced. Its job is `python -m stratos.provision.worker`, a Prefect
worker for the server's pool that ends when the flow run that launched it ends (see worker.py).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from stratos.spec import ProvisionSettings

# SkyPilot 0.14.1's cloud registry (sky.utils.registry.CLOUD_REGISTRY); tests/test_provision.py checks
# it against the installed SkyPilot. A catalog row whose cloud is not here cannot be launched.
SKY_CLOUDS = frozenset(
    [
        "aws",
        "azure",
        "cudo",
        "do",
        "fluidstack",
        "gcp",
        "hyperbolic",
        "ibm",
        "kubernetes",
        "lambda",
        "mithril",
        "nebius",
        "oci",
        "paperspace",
        "primeintellect",
        "runpod",
        "scp",
        "seeweb",
        "shadeform",
        "slurm",
        "ssh",
        "vast",
        "verda",
        "vsphere",
        "yotta",
    ]
)
# Clouds on which SkyPilot 0.14.1 cannot run a docker image (CloudImplementationFeatures.DOCKER_IMAGE).
NO_DOCKER_IMAGE = frozenset({"cudo"})

# SkyPilot accepts [a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])? and appends "-<8-hex user hash>" on the cloud;
# GCP caps that at 35 characters, so 26 keeps the name readable (untruncated) on every major cloud.
CLUSTER_NAME_MAX = 26
IMAGE_PYTHON = "/opt/stratos/.venv/bin/python"  # where docker/gpu-worker.Dockerfile installs Stratos
PIP_VENV = "$HOME/stratos-venv"  # $HOME, not ~: the run command quotes it


@dataclass(frozen=True)
class ServerRow:
    """One catalog row as SkyPilot knows it (the accelerator in the cloud's own spelling)."""

    id: str
    cloud: str
    instance_type: str
    region: str
    zone: str  # "" where the cloud has no zones in the catalog
    accelerator: str
    accelerator_count: int
    price: float
    spot_price: float | None


class NotLaunchable(ValueError):
    """A catalog row SkyPilot cannot launch as configured (unknown cloud, no docker image there)."""


def _raw_rows(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text())
        return pd.DataFrame(data.get("servers", data) if isinstance(data, dict) else data).astype(str)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _row_id(raw: pd.DataFrame, cloud: pd.Series) -> pd.Series:
    """Catalog ids the way tasks/catalog.py builds them: cloud/instance_type/region[/zone]."""
    ids = cloud + "/" + raw["InstanceType"] + "/" + raw["Region"]
    if "AvailabilityZone" in raw:
        zone = raw["AvailabilityZone"].fillna("")
        ids = ids.where(zone == "", ids + "/" + zone)
    return ids


def server_row(server_id: str, catalog_paths: list[Path]) -> ServerRow:
    """The raw catalog row behind a server id (the cheapest listing when a catalog repeats it)."""
    for path in catalog_paths:
        raw = _raw_rows(path)
        cloud = raw["Cloud"].str.lower() if "Cloud" in raw else pd.Series(path.stem.lower(), index=raw.index)
        match = raw[_row_id(raw, cloud) == server_id]
        if match.empty:
            continue
        price = pd.to_numeric(match["Price"], errors="coerce")
        best = match.loc[price.idxmin()]
        spot = pd.to_numeric(pd.Series([best.get("SpotPrice", "")]), errors="coerce").iloc[0]
        return ServerRow(
            id=server_id,
            cloud=str(cloud[best.name]),
            instance_type=best["InstanceType"],
            region=best["Region"],
            zone=str(best.get("AvailabilityZone", "") or ""),
            accelerator=best["AcceleratorName"].strip(),
            accelerator_count=int(float(best["AcceleratorCount"])),
            price=float(price[best.name]),
            spot_price=None if pd.isna(spot) else float(spot),
        )
    raise ValueError(
        f"server '{server_id}' is in none of the catalogs {[str(p) for p in catalog_paths]}; "
        "choose a server from `stratos plan` with the same servers.catalogs"
    )


def check_launchable(row: ServerRow, settings: ProvisionSettings) -> None:
    """Raise before anything is launched if SkyPilot cannot run this row as configured."""
    if row.cloud not in SKY_CLOUDS:
        raise NotLaunchable(
            f"server '{row.id}' is on cloud '{row.cloud}', which SkyPilot cannot launch on; use a catalog "
            f"whose Cloud column (or file name) is a SkyPilot cloud ({', '.join(sorted(SKY_CLOUDS))})"
        )
    if settings.backend == "skypilot" and settings.setup == "image" and row.cloud in NO_DOCKER_IMAGE:
        raise NotLaunchable(
            f"server '{row.id}': SkyPilot cannot run a docker image on '{row.cloud}' (provision.setup = "
            "'image'); set provision.setup: pip with a pinned pip_requirement, or choose another server"
        )


def cluster_name(run_name: str, server_id: str) -> str:
    """A SkyPilot cluster name for this run on this server: stable, so a re-run finds its cluster."""
    digest = hashlib.sha256(f"{run_name}\0{server_id}".encode()).hexdigest()[:6]
    slug = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-")
    room = CLUSTER_NAME_MAX - len("stratos--") - len(digest)
    slug = slug[:room].rstrip("-")
    return f"stratos-{slug}-{digest}" if slug else f"stratos-{digest}"


def _setup_commands(settings: ProvisionSettings) -> tuple[str | None, str]:
    """(SkyPilot setup script, python that runs the worker) for the chosen way of getting Stratos."""
    if settings.setup == "image":
        return None, IMAGE_PYTHON
    requirement = shlex.quote(settings.pip_requirement or "")
    # Stratos needs Python 3.11, which cloud images rarely ship; uv fetches it. torch first, as in
    # scripts/setup.sh (on a GPU VM the registry's torch wheel is the CUDA build, which is wanted here).
    script = "\n".join(
        [
            "set -euo pipefail",
            "python3 -m pip install -q --user uv",
            f"~/.local/bin/uv venv -q --python 3.11 {PIP_VENV}",
            f"~/.local/bin/uv pip install -q --python {PIP_VENV}/bin/python torch==2.13.0",
            f"~/.local/bin/uv pip install -q --python {PIP_VENV}/bin/python {requirement}",
        ]
    )
    return script, f"{PIP_VENV}/bin/python"


def sky_task(
    row: ServerRow,
    settings: ProvisionSettings,
    pool: str,
    api_url: str,
    run_name: str,
    flow_run_id: str | None = None,
    use_spot: bool = False,
) -> dict:
    """The SkyPilot task YAML (as a dict) that runs the worker for `pool` on exactly this catalog row.

    `use_spot` is the resolved choice (provision.use_spot, else servers.use_spot). Secrets are not
    in here: SkyLauncher hands them to SkyPilot from the environment.
    """
    resources: dict = {
        "cloud": row.cloud,
        "region": row.region,
        "instance_type": row.instance_type,
        "accelerators": {row.accelerator: row.accelerator_count},
        "use_spot": use_spot,
    }
    if row.zone:
        resources["zone"] = row.zone
    if settings.setup == "image" and settings.image:  # no image yet: `stratos plan` still shows the rest
        resources["image_id"] = f"docker:{settings.image}"
    setup, python = _setup_commands(settings)
    envs = {
        "PREFECT_API_URL": api_url,
        "STRATOS_POOL": pool,
        "STRATOS_RUN": run_name,
        "STRATOS_SERVER_ID": row.id,
        "STRATOS_FLOW_RUN_ID": flow_run_id or "",
        "STRATOS_PYTHON": python,
    }
    task = {"name": "stratos-worker", "resources": resources, "envs": envs}
    if setup:
        task["setup"] = setup
    task["run"] = 'exec "$STRATOS_PYTHON" -m stratos.provision.worker'
    return task

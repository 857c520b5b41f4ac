"""Talking to SkyPilot, which lives in its own venv: find it, run a helper script with its python.

SkyPilot 0.14.1 pins click<8.2 and uvicorn<0.36, which Prefect 3.8 outgrew, so Stratos never
imports it: `scripts/setup-sky.sh` creates its venv and the scripts in stratos/sky_helpers/ (stdlib
and sky only) run there, reading one JSON object on stdin and printing one on their last line.

`sky_plan` runs SkyPilot's optimizer offline: it gives SkyPilot a temporary HOME whose catalog
directory holds Stratos's own catalog files (SkyPilot reads hand-placed catalogs and never
overwrites them), so SkyPilot plans over the very prices Stratos chose from, with no credentials.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from stratos.data import CATALOG_DIR
from stratos.provision.task import _raw_rows

DEFAULT_SKY_BIN = "~/.stratos/sky-venv/bin"  # where scripts/setup-sky.sh puts it unless $STRATOS_SKY says
HELPERS = Path(__file__).resolve().parents[1] / "sky_helpers"
SKY_ACCELERATORS = CATALOG_DIR / "accelerators.csv"  # SkyPilot's common/accelerators.csv, shipped


class SkyNotInstalled(ValueError):
    """The SkyPilot venv is missing (a set-up problem, reported like bad input: one line, exit 2)."""


class SkyHelperError(RuntimeError):
    """A helper script ended without its JSON answer (SkyPilot crashed, or the venv is broken)."""


def sky_bin() -> Path:
    """The SkyPilot venv's bin/ folder: $STRATOS_SKY (the venv or its bin/), else ~/.stratos/sky-venv/bin."""
    configured = os.environ.get("STRATOS_SKY")
    path = Path(configured or DEFAULT_SKY_BIN).expanduser()
    if path.name != "bin":
        path = path / "bin"
    if not (path / "python").is_file() or not (path / "sky").is_file():
        where = f"$STRATOS_SKY = {configured}" if configured else f"the default {DEFAULT_SKY_BIN}"
        raise SkyNotInstalled(
            f"no SkyPilot venv at {path} ({where}); create it with `bash scripts/setup-sky.sh` "
            "(or point STRATOS_SKY at an existing one)"
        )
    return path


def run_helper(
    script: str, payload: dict, env: dict[str, str] | None = None, timeout: float | None = None
) -> dict:
    """Run stratos/sky_helpers/<script> with the SkyPilot venv's python; its last stdout line, parsed."""
    python = sky_bin() / "python"
    proc = subprocess.run(
        [str(python), str(HELPERS / script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SkyHelperError(f"{script} (exit {proc.returncode}) printed no JSON answer:\n{tail}") from None


def catalogs_by_cloud(catalog_paths: list[Path], folder: Path) -> dict[str, str]:
    """Write each cloud's catalog rows as one SkyPilot vms.csv under `folder`; cloud -> file."""
    out: dict[str, str] = {}
    frames: dict[str, list[pd.DataFrame]] = {}
    for path in catalog_paths:
        raw = _raw_rows(path)
        clouds = raw.pop("Cloud").str.lower() if "Cloud" in raw else [path.stem.lower()] * len(raw)
        for cloud, rows in raw.groupby(list(clouds)):
            frames.setdefault(str(cloud), []).append(rows)
    for cloud, parts in frames.items():
        file = folder / f"{cloud}.csv"
        # The shipped RunPod catalog lists 2x_B200_SECURE twice in 14 zones, row for row identical;
        # SkyPilot's price lookup asserts one row per instance and zone, so the copies are dropped.
        pd.concat(parts, ignore_index=True).drop_duplicates().to_csv(file, index=False)
        out[cloud] = str(file)
    return out


def sky_plan(tasks: list[dict], catalog_paths: list[Path], timeout: float = 300) -> dict:
    """SkyPilot's optimizer on each task, over Stratos's catalogs, every catalog cloud enabled.

    Returns the helper's answer: {"catalog_dir": ..., "plans": [one per task: {"ok": True, "cloud",
    "instance_type", "region", "zone", "accelerators", "use_spot", "hourly_usd"} or {"ok": False,
    "error_type", "message"}]}.
    """
    with tempfile.TemporaryDirectory(prefix="stratos-sky-plan-") as tmp:
        home = Path(tmp)
        catalogs = catalogs_by_cloud(catalog_paths, home)
        payload = {"catalogs": catalogs, "accelerators": str(SKY_ACCELERATORS), "tasks": tasks}
        # The helper drops SKY_RUNTIME_DIR, so SkyPilot's '~' (its catalogs, its state) is this HOME.
        env = {"HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
        return run_helper("plan.py", payload, env=env, timeout=timeout)

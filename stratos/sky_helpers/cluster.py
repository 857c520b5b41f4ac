"""Launch, down and list SkyPilot clusters for Stratos: run with the SkyPilot venv's python, never Stratos's.

stdin, one of:
    {"op": "launch", "cluster": NAME, "task": {...}, "secrets": {NAME: SOURCE_ENV}, "retry_until_up": bool,
     "idle_minutes_to_autostop": int | null, "log_path": PATH}
    {"op": "down", "cluster": NAME}
    {"op": "status", "clusters": [NAME, ...]}
stdout, last line: {"ok": true, ...} or {"ok": false, "error_type": ..., "message": ...}

Goes through SkyPilot's SDK (and so its API server, which SkyPilot starts locally when none is
configured) with the user's own credentials and catalogs. A failed launch is reported with
SkyPilot's exception type and message; Stratos decides what it means (capacity, quota, other).
Standard library and sky only: this file must not import Stratos.
"""

from __future__ import annotations

import json
import os
import sys


def launch(request: dict) -> dict:
    import sky

    task = sky.Task.from_yaml_config(request["task"])
    # Secrets travel from this process's environment to SkyPilot, which keeps them out of its logs;
    # they are never in the task dict Stratos wrote.
    secrets = {name: os.environ[src] for name, src in request.get("secrets", {}).items() if src in os.environ}
    if secrets:
        task.update_secrets(secrets)
    with open(request["log_path"], "a", encoding="utf-8") as log:
        request_id = sky.launch(
            task,
            cluster_name=request["cluster"],
            retry_until_up=request["retry_until_up"],
            idle_minutes_to_autostop=request["idle_minutes_to_autostop"],
            # Autodown rather than autostop: Lambda, RunPod and Cudo cannot stop VMs, and a stopped
            # VM still bills its disk.
            down=True,
        )
        job_id, handle = sky.stream_and_get(request_id, output_stream=log)[:2]
    resources = handle.launched_resources
    return {
        "ok": True,
        "job_id": job_id,
        "instance_type": resources.instance_type,
        "region": "/".join(p for p in (resources.region, resources.zone) if p),
        "hourly_usd": resources.get_cost(3600),
    }


def down(request: dict) -> dict:
    import sky
    from sky import exceptions

    try:
        sky.stream_and_get(sky.down(request["cluster"]))
    except exceptions.ClusterDoesNotExist:
        return {"ok": True, "existed": False}
    return {"ok": True, "existed": True}


def status(request: dict) -> dict:
    import sky

    clusters = sky.stream_and_get(sky.status(cluster_names=request["clusters"] or None))
    return {"ok": True, "clusters": {c.name: c.status.value for c in clusters}}


def main() -> int:
    request = json.load(sys.stdin)
    ops = {"launch": launch, "down": down, "status": status}
    try:
        answer = ops[request["op"]](request)
    except Exception as err:  # noqa: BLE001 - reported to Stratos, which classifies it
        history = getattr(err, "failover_history", None) or []
        message = "; ".join([str(err), *(f"{type(e).__name__}: {e}" for e in history)])
        answer = {"ok": False, "error_type": type(err).__name__, "message": message[:4000]}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`stratos plan --provision-plan`: SkyPilot's own plan for the chosen server, next to Stratos's choice.

SkyPilot's optimizer gets the task Stratos would launch (pinned to the chosen catalog row) and,
for comparison, the same accelerators with nothing pinned, which it prices cost-first over every
catalog cloud: the baseline the Pareto Front Grid is measured against. Both run offline over
Stratos's own catalog files (stratos/provision/sky.py), so a user sees before spending anything
that SkyPilot will launch exactly the server Stratos chose, at the price Stratos planned with.
"""

from __future__ import annotations

import yaml

from stratos.provision.sky import sky_plan
from stratos.provision.task import ServerRow, check_launchable, cluster_name, server_row, sky_task
from stratos.spec import DistillSpec


def launch_spot(spec: DistillSpec) -> bool:
    """Spot or on-demand: provision.use_spot, else the pricing the server was chosen on."""
    return spec.provision.use_spot if spec.provision.use_spot is not None else spec.servers.use_spot


def stratos_choice(row: ServerRow, use_spot: bool) -> dict:
    price = row.spot_price if use_spot else row.price
    zone = row.zone or None
    return {
        "cloud": row.cloud,
        "instance_type": row.instance_type,
        "region": row.region,
        "zone": zone,
        "accelerators": {row.accelerator: row.accelerator_count},
        "use_spot": use_spot,
        "hourly_usd": price,
    }


def agrees(stratos: dict, skypilot: dict) -> bool:
    """Same cloud, instance type, region and zone (the price is shown, not compared: it is SkyPilot's)."""
    keys = ("cloud", "instance_type", "region", "zone")
    return bool(skypilot.get("ok")) and all(stratos[k] == skypilot.get(k) for k in keys)


def provision_plan(spec: DistillSpec, server_id: str) -> dict:
    """Stratos's choice, SkyPilot's plan for the task Stratos generated, and SkyPilot's cheapest alone."""
    paths = spec.servers.catalog_paths()
    row = server_row(server_id, paths)
    check_launchable(row, spec.provision)
    use_spot = launch_spot(spec)
    name = cluster_name(spec.name, row.id)
    api_url = spec.provision.prefect_api_url or "$PREFECT_API_URL"
    task = sky_task(row, spec.provision, pool=name, api_url=api_url, run_name=spec.name, use_spot=use_spot)
    cheapest = {
        "name": "cheapest",
        "resources": {"accelerators": {row.accelerator: row.accelerator_count}, "use_spot": use_spot},
    }
    answer = sky_plan([task, cheapest], paths)
    pinned, alone = answer["plans"]
    mine = stratos_choice(row, use_spot)
    return {
        "server_id": row.id,
        "cluster": name,
        "stratos": mine,
        "skypilot": pinned,
        "skypilot_cheapest": alone,
        "agrees": agrees(mine, pinned),
        "catalog_dir": answer["catalog_dir"],
        "task": task,
    }


def _line(label: str, plan: dict) -> str:
    if not plan.get("ok", True):
        return f"  {label:<16} refused: {plan['error_type']}: {plan['message'].splitlines()[0][:160]}"
    where = "/".join(p for p in (plan["region"], plan.get("zone")) if p)
    price = f"${plan['hourly_usd']:.2f}/h" if plan.get("hourly_usd") is not None else "n/a"
    return f"  {label:<16} {plan['cloud']:<8} {plan['instance_type']:<40} {where:<28} {price:>10}"


def render_provision_plan(plan: dict) -> str:
    acc = ", ".join(f"{k}:{v}" for k, v in plan["stratos"]["accelerators"].items())
    verdict = "SkyPilot agrees" if plan["agrees"] else "SkyPilot DISAGREES: do not launch before checking why"
    lines = [
        f"Provisioning plan for {plan['server_id']} (cluster {plan['cluster']}): {verdict}",
        "SkyPilot's optimizer over the same catalogs, every catalog cloud enabled, no credentials used:",
        _line("Stratos", plan["stratos"]),
        _line("SkyPilot", plan["skypilot"]),
        _line("SkyPilot alone", plan["skypilot_cheapest"]) + f"   (cheapest {acc} anywhere: cost-first)",
        "\nThe SkyPilot task Stratos would launch:",
        yaml.safe_dump(plan["task"], sort_keys=False).rstrip(),
    ]
    return "\n".join(lines)

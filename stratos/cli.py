"""The `stratos` command.

    stratos run SPEC.yaml [--json]  the whole distill flow: select, synthesize, train, evaluate, deploy, report
    stratos deploy SPEC.yaml [--pool P] [--cron EXPR]  register `distill` and `redistill` (needs PREFECT_API_URL)
    stratos plan SPEC.yaml [--json] [--job] [--plot FILE.png] [--method NAME] [--provision-plan]
    stratos endpoints [--json]     deployed endpoints ($STRATOS_HOME/endpoints) and whether they answer
    stratos stop ENDPOINT          stop one by id or URL
    stratos clusters [--json]      clusters provisioning launched ($STRATOS_HOME/clusters) and their status
    stratos down RUN_OR_CLUSTER    tear down one cluster, or every cluster a run launched

Every failure is one line on stderr and an exit code (stratos/terminal.py; also in `stratos --help`):

    0    success
    1    the run failed unexpectedly: one line, the full traceback under $STRATOS_HOME/logs/
    2    bad input: spec, dataset, catalog, model path, credentials, directories (field, value, fix)
    3    infeasible: no server, teacher or student meets the constraints, even relaxed; or the
         budget ran out before the job was done (re-run with more to resume)
    4    a service the run needs failed or does not answer: a teacher endpoint, the artifact
         store (S3), a worker, the Prefect server
    130  interrupted (Ctrl-C): the run stopped cleanly (a second Ctrl-C: at once); the same
         command resumes it
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from stratos.catalog import load_catalogs
from stratos.job_estimate import STAGES, job_estimate_record
from stratos.job_profile import job_profile
from stratos.pfg import select_server, selection_scores
from stratos.preflight import preflight
from stratos.provision.commands import cluster_table, down_clusters, refreshed_records
from stratos.provision.plan import provision_plan, render_provision_plan
from stratos.provision.sky import sky_bin
from stratos.serving.endpoints import EndpointNotFoundError, list_endpoints, stop_endpoint
from stratos.spec import SELECTION_METHODS, is_empty_spec, load_spec
from stratos.terminal import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INFEASIBLE,
    interruptible,
    log_path,
    report_failure,
    run_logging,
)

DEFAULT_POOL, DEFAULT_CRON, DEFAULT_NAME = "stratos-local", "0 3 * * *", "redistill"


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    """Run the distill flow on a spec (embedded Prefect unless PREFECT_API_URL names a server)."""
    spec = load_spec(args.spec)  # before Prefect starts: a bad spec fails in a second
    notes = preflight(spec)  # and so does a bad dataset, model, credential, directory or endpoint
    # The flow's stages load torch and transformers (seconds); the other commands need neither.
    from flows import run_flow, stop_started_processes

    # Stage progress (synthesis chunks, training steps with ETA) comes from Stratos' own loggers.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s | %(name)s | %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("stratos", "tasks", "flows"):
        logging.getLogger(name).setLevel(logging.INFO)
    run_log = log_path("run")
    run_logging(run_log)  # tracebacks go to the run's log file, not the terminal
    for note in notes:
        logging.getLogger("stratos").warning(note)
    try:
        with interruptible(stop_started_processes):
            result = run_flow(spec, checked=True)
    except (Exception, KeyboardInterrupt) as exc:
        return report_failure(exc, run_log)
    if args.json:
        print(result.model_dump_json())
    else:
        print(f"\nrun '{result.name}': {result.status}")
        for name, uri in result.artifacts.items():
            if uri:
                print(f"  {name:<20} {uri}")
        if result.endpoint:
            print(
                f"  endpoint             {result.endpoint['url']} (stop: stratos stop {result.endpoint['id']})"
            )
    return run_exit_code(result.status)


def run_exit_code(status: str) -> int:
    """0 for a run that trained (and served) its student; 3 when the constraints stopped it: nothing
    feasible even relaxed, or the budget spent before the job was done (a re-run with more resumes)."""
    return EXIT_INFEASIBLE if status in ("infeasible", "budget_exhausted") else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Select a server for a spec and show the Pareto front, the choice and the baselines."""
    spec = load_spec(args.spec)
    if args.provision_plan:
        sky_bin()  # no SkyPilot venv: one line now, before any plan is printed
    if is_empty_spec(args.spec):
        print(
            f"note: '{args.spec}' sets nothing, so this plans on every default: the builtin catalogs and "
            f"constraints {spec.constraints.model_dump()}",
            file=sys.stderr,
        )
    servers, report = load_catalogs(spec.servers.catalog_paths())
    if not args.json:
        print(report.summary(), file=sys.stderr)
    # Loud in both modes: a plan over a catalog that lost many rows is not the plan the user asked for.
    for i, line in enumerate(report.warnings()):
        print(f"warning: {line}" if i == 0 else line, file=sys.stderr)
    if servers.empty:
        return _fail(f"no usable server in the catalogs\n{report.summary()}")
    job = job_profile(spec) if args.job or spec.servers.cost_objective == "job" else None
    selection = select_server(servers, spec.constraints, spec.servers, method=args.method, job=job)
    by_objective = {selection.cost_objective: selection}
    if args.job:
        other = "hourly" if selection.cost_objective == "job" else "job"
        settings = spec.servers.model_copy(update={"cost_objective": other})
        by_objective[other] = select_server(servers, spec.constraints, settings, method=args.method, job=job)
    if args.plot:
        from stratos.plots import plot_front  # matplotlib, only for --plot

        plot_front(selection, Path(args.plot))
    provision = None
    if args.provision_plan and selection.feasible:
        provision = provision_plan(spec, selection.chosen)
    if args.json:
        out = selection.to_json(job_estimates=args.job)
        if args.job:
            out["choice_by_objective"] = {name: _choice_record(sel) for name, sel in by_objective.items()}
        if provision is not None:
            out["provision_plan"] = provision
        out["catalog"] = report.to_json()
        out["location_assumed"] = assumed_location_summary(selection)
        # Rows of selection.servers follow the catalog table's order.
        for record, source, place, hardware in zip(
            out["servers"],
            servers["location_source"],
            servers["location"],
            servers["hardware_source"],
            strict=True,
        ):
            record.update(location_source=source, location=place, hardware_source=hardware)
        out["scores"] = selection_scores(selection, spec.servers.weights)
        print(json.dumps(out, default=float))
    else:
        print(render_plan(selection, spec.servers.weights))
        if args.job:
            print(render_job(selection, by_objective))
        if provision is not None:
            print("\n" + render_provision_plan(provision))
        if args.plot:
            print(f"\nPareto front plot written to {args.plot}")
    return 0 if selection.feasible else EXIT_INFEASIBLE


def assumed_location_summary(selection) -> dict:
    """How many servers rest on an assumed location, among all, the feasible and the Pareto front."""
    s = selection.servers
    assumed = s["location_assumed"].to_numpy()
    on_front = s["id"].isin(selection.front).to_numpy()
    return {
        "servers": int(assumed.sum()),
        "feasible": int((assumed & s["feasible"].to_numpy()).sum()),
        "on_front": int((assumed & on_front).sum()),
        "chosen": bool(selection.chosen and s.loc[s["id"] == selection.chosen, "location_assumed"].iat[0]),
        "latency_ms": round(float(s.loc[s["location_assumed"], "latency_ms"].max()), 1)
        if assumed.any()
        else None,
    }


def render_plan(selection, weights) -> str:
    """Human-readable plan: the front, the choice and why, and each baseline's pick."""
    s = selection.servers.set_index("id")
    lines: list[str] = []
    if not selection.feasible:
        lines.append(f"INFEASIBLE: {selection.reason}")
        lines.append("\nEliminated by each constraint (a server can fail several):")
        for name, count in sorted(selection.eliminated.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {count:6d}  {selection.constraint_text[name]}")
        lines.append("\nNearest to feasible:")
        for near in selection.nearest_feasible:
            lines.append(
                f"  {near['id']:<52} ${near['cost_per_hour']:>7.2f}/h {near['latency_ms']:>7.1f} ms "
                f"{near['total_gpu_memory_gb']:>6.0f} GB  misses: {', '.join(near['misses'])}"
            )
        lines.append("\nRelax the constraint that eliminates the most servers, or add catalogs.")
        return "\n".join(lines)

    job = selection.cost_objective == "job"
    front = s.loc[selection.front].sort_values("cost" if job else "cost_per_hour")
    lines.append(f"Pareto front ({len(front)} non-dominated of {int(s['feasible'].sum())} feasible servers):")
    lines.append(
        f"  {'server':<52} {'hardware':>9} {'$/h':>8} {'rtt ms':>7}" + (f" {'job $':>9}" if job else "")
    )
    for sid, row in front.head(40).iterrows():
        mark = " <= chosen" if sid == selection.chosen else ""
        cost = f" {row.job_usd:>9.2f}" if job else ""
        assumed = "*" if row.location_assumed else " "
        lines.append(
            f"  {sid:<52} {row.hardware:>9.1f} {row.cost_per_hour:>8.2f} {row.latency_ms:>7.1f}{assumed}{cost}{mark}"
        )
    if len(front) > 40:
        lines.append(f"  ... {len(front) - 40} more (use --json for all)")
    assumed = assumed_location_summary(selection)
    if assumed["feasible"]:
        lines.append(
            f"  * {assumed['feasible']} feasible servers ({assumed['on_front']} on the front) rest on an assumed "
            f"location: their round trip is the worst case, {assumed['latency_ms']:.0f} ms"
        )
    lines.append(f"\nChosen: {selection.chosen}\n  {selection.reason}")
    if selection.eliminated:
        lines.append(
            "Eliminated: "
            + ", ".join(f"{selection.constraint_text[n]} ({c})" for n, c in selection.eliminated.items())
        )
    scores = selection_scores(selection, weights)
    lines.append("\nWhat each method would choose (score = closeness to the ideal point, 1 = best):")
    for name, sid in selection.baselines.items():
        row = s.loc[sid]
        lines.append(
            f"  {name:<15} {sid:<52} ${row.cost_per_hour:>7.2f}/h {row.latency_ms:>7.1f} ms "
            f"hw {row.hardware:>8.1f}  score {scores[name]:.3f}"
        )
    return "\n".join(lines)


def _choice_record(selection) -> dict:
    """What one cost objective chose, with the chosen server's job estimate (`plan --job --json`)."""
    if not selection.feasible:
        return {"chosen": None, "reason": selection.reason}
    position = int(np.flatnonzero(selection.servers["id"].to_numpy() == selection.chosen)[0])
    row = selection.servers.iloc[position]
    return {
        "chosen": selection.chosen,
        "cost_per_hour": float(row.cost_per_hour),
        "job_estimate": job_estimate_record(selection.job_estimates(), position),
        "reason": selection.reason,
    }


def render_job(selection, by_objective: dict) -> str:
    """The per-server job estimate (the chosen server and the front's cheapest jobs), both objectives' choices."""
    if not selection.feasible:
        return ""
    s, est = selection.servers, selection.job_estimates()
    table = s[["id", "cost_per_hour"]].join(est)
    front = table[s["id"].isin(selection.front)].sort_values(["job_planned", "id"])
    rows = table[s["id"] == selection.chosen]
    rows = pd.concat([rows, front[front["id"] != selection.chosen].head(9)])
    lines = ["\nJob estimate, USD (planned; low-high), chosen server first, then the front's cheapest jobs:"]
    head = f"  {'server':<52} {'$/h':>6} {'GPU h':>6} {'planned':>8} {'low-high':>15}"
    lines.append(head + "".join(f" {stage:>10}" for stage in STAGES))
    for r in rows.itertuples():
        span = f"{r.job_low:.2f}-{r.job_high:.2f}"
        cells = "".join(f" {getattr(r, f'{stage}_planned'):>10.2f}" for stage in STAGES)
        lines.append(
            f"  {r.id:<52} {r.cost_per_hour:>6.2f} {r.gpu_hours:>6.2f} {r.job_planned:>8.2f} {span:>15}{cells}"
        )
    lines.append("\nChoice by cost objective (servers.cost_objective):")
    for name, sel in by_objective.items():
        if not sel.feasible:
            lines.append(f"  {name:<7} none: {sel.reason}")
            continue
        r = table[s["id"] == sel.chosen].iloc[0]
        lines.append(
            f"  {name:<7} {sel.chosen:<52} ${r.cost_per_hour:.2f}/h, job ${r.job_planned:.2f} "
            f"({r.job_low:.2f}-{r.job_high:.2f}), {r.gpu_hours:.2f} GPU h"
        )
    lines += _why_they_differ(table.set_index("id"), by_objective)
    lines.append("\nWhat the estimate depends on and assumes:")
    for stage, info in selection.job_assumptions().items():
        lines.append(f"  {stage}: depends on {'; '.join(info['depends_on'])}")
        lines += [f"    - {note}" for note in info["assumed"]]
    return "\n".join(lines)


def _why_they_differ(table: pd.DataFrame, by_objective: dict) -> list[str]:
    """One line on how the hourly and job choices compare, when both exist and differ."""
    hourly, job = by_objective.get("hourly"), by_objective.get("job")
    if not (hourly and job and hourly.feasible and job.feasible) or hourly.chosen == job.chosen:
        return ["  both objectives choose the same server"] if hourly and job else []
    h, j = table.loc[hourly.chosen], table.loc[job.chosen]
    if j.job_planned < h.job_planned:
        return [
            f"  job's choice costs ${j.cost_per_hour - h.cost_per_hour:+.2f}/h but saves "
            f"${h.job_planned - j.job_planned:.2f} on the planned job ({j.gpu_hours:.2f} GPU h against "
            f"{h.gpu_hours:.2f})"
        ]
    return ["  the choices differ through the grid's hardware and latency axes, not the job's cost"]


def cmd_endpoints(args: argparse.Namespace) -> int:
    """List recorded endpoints; `alive` means the process runs and /health answers."""
    records = list_endpoints()
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records]))
        return 0
    if not records:
        print("no endpoints recorded (deploy one with the distill flow)")
        return 0
    rows = [("id", "url", "model", "server", "backend", "alive", "started")]
    rows += [
        (
            r.id,
            r.url,
            r.served_model_name,
            r.server_id,
            r.backend,
            "yes" if r.alive else "no",
            r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop an endpoint's server (SIGTERM, then SIGKILL after a grace period) and drop its record."""
    try:
        record = stop_endpoint(args.endpoint)
    except EndpointNotFoundError as exc:
        return _fail(str(exc))
    note = "" if record.alive else "; it was not answering"
    print(f"stopped {record.id} ({record.url}, pid {record.pid}){note}")
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    """List the clusters provisioning launched, their status refreshed where the backend can tell."""
    records = refreshed_records()
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records]))
    else:
        print(cluster_table(records) if records else "no clusters recorded (provision.enabled launches them)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Tear down one cluster by name, or every cluster a run launched."""
    for record in down_clusters(args.target):
        print(f"downed {record.name} ({record.backend}, {record.server_id}, run '{record.run_name}')")
    return 0


def deploy_arguments(parser: argparse.ArgumentParser) -> None:
    """The `stratos deploy` options (also `python deployments/deploy.py`)."""
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


def cmd_deploy(args: argparse.Namespace) -> int:
    """Register the deployments and say how to run them."""
    from deployments.deploy import deploy  # registering loads the flow, and with it torch and transformers

    names = deploy(args.spec, pool=args.pool, cron=args.cron, name=args.name, timezone=args.timezone)
    for deployment in names:
        print(f"registered {deployment} on work pool '{args.pool}'")
    print(
        f"start a worker: prefect worker start --pool {args.pool}\nrun now:        prefect deployment run {names[0]}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratos",
        description="Distil a teacher LLM into a small student under constraints.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole distill flow on a spec and print the report")
    run.add_argument("spec", help="path to a YAML DistillSpec")
    run.add_argument("--json", action="store_true", help="print the DistillResult as one JSON object")
    run.set_defaults(func=cmd_run)
    deploy = sub.add_parser(
        "deploy", help="register the distill and redistill deployments on a Prefect server"
    )
    deploy_arguments(deploy)
    deploy.set_defaults(func=cmd_deploy)
    plan = sub.add_parser(
        "plan", help="choose a server for a spec (Pareto Front Grid) and compare with baselines"
    )
    plan.add_argument("spec", help="path to a YAML DistillSpec")
    plan.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    plan.add_argument("--plot", metavar="FILE.png", help="write the Pareto front (cost vs latency) to a PNG")
    plan.add_argument("--method", choices=SELECTION_METHODS, help="override servers.method from the spec")
    plan.add_argument(
        "--job",
        action="store_true",
        help="show each server's estimated job cost (range, by stage, assumptions) and the choice under both "
        "cost objectives",
    )
    plan.add_argument(
        "--provision-plan",
        action="store_true",
        help="also show SkyPilot's optimizer plan for the chosen server next to Stratos's choice "
        "(needs the SkyPilot venv: scripts/setup-sky.sh)",
    )
    plan.set_defaults(func=cmd_plan)
    endpoints = sub.add_parser("endpoints", help="list deployed endpoints and whether they answer")
    endpoints.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    endpoints.set_defaults(func=cmd_endpoints)
    stop = sub.add_parser("stop", help="stop a deployed endpoint")
    stop.add_argument("endpoint", help="endpoint id or URL, as `stratos endpoints` shows them")
    stop.set_defaults(func=cmd_stop)
    clusters = sub.add_parser("clusters", help="list the clusters provisioning launched and their status")
    clusters.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    clusters.set_defaults(func=cmd_clusters)
    down = sub.add_parser("down", help="tear down a provisioned cluster, or every cluster of a run")
    down.add_argument(
        "target", metavar="RUN_OR_CLUSTER", help="cluster name or run name, as `stratos clusters` shows"
    )
    down.set_defaults(func=cmd_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as exc:  # one line and an exit code, whatever failed
        return report_failure(exc)


if __name__ == "__main__":
    sys.exit(main())

"""The `stratos` command.

    stratos run SPEC.yaml [--json]  the whole distill flow: select, synthesize, train, evaluate, deploy, report
    stratos deploy SPEC.yaml [--pool P] [--cron EXPR]  register `distill` and `redistill` (needs PREFECT_API_URL)
    stratos plan SPEC.yaml [--json] [--plot FILE.png] [--method NAME]
    stratos endpoints [--json]     deployed endpoints ($STRATOS_HOME/endpoints) and whether they answer
    stratos stop ENDPOINT          stop one by id or URL

Exit codes: 0 success, 2 bad input (spec, catalog, unknown endpoint), 3 no feasible server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stratos.spec import SELECTION_METHODS, SpecError, load_spec

EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    """Run the distill flow on a spec (embedded Prefect unless PREFECT_API_URL names a server)."""
    spec = load_spec(args.spec)  # before Prefect starts: a bad spec fails in a second
    import logging

    from flows import run_flow

    # Stage progress (synthesis chunks, training steps with ETA) comes from Stratos' own loggers.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s | %(name)s | %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("stratos", "tasks", "flows"):
        logging.getLogger(name).setLevel(logging.INFO)

    result = run_flow(spec)
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
    return EXIT_INFEASIBLE if result.status == "infeasible" else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Select a server for a spec and show the Pareto front, the choice and the baselines."""
    from tasks.catalog import load_catalogs
    from tasks.select_server import select_server, selection_scores

    spec = load_spec(args.spec)
    servers, report = load_catalogs(spec.servers.catalog_paths())
    if servers.empty:
        return _fail(f"no usable server in the catalogs\n{report.summary()}")
    selection = select_server(servers, spec.constraints, spec.servers, method=args.method)
    if args.plot:
        from stratos.plots import plot_front

        plot_front(selection, Path(args.plot))
    if args.json:
        out = selection.to_json()
        out["catalog"] = {
            "rows_read": report.rows_read,
            "rows_kept": report.rows_kept,
            "skipped": dict(report.skipped),
        }
        out["scores"] = selection_scores(selection, spec.servers.weights)
        print(json.dumps(out, default=float))
    else:
        print(report.summary(), file=sys.stderr)
        print(render_plan(selection, spec.servers.weights))
        if args.plot:
            print(f"\nPareto front plot written to {args.plot}")
    return 0 if selection.feasible else EXIT_INFEASIBLE


def render_plan(selection, weights) -> str:
    """Human-readable plan: the front, the choice and why, and each baseline's pick."""
    from tasks.select_server import selection_scores

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

    front = s.loc[selection.front].sort_values("cost_per_hour")
    lines.append(f"Pareto front ({len(front)} non-dominated of {int(s['feasible'].sum())} feasible servers):")
    lines.append(f"  {'server':<52} {'hardware':>9} {'$/h':>8} {'rtt ms':>7}")
    for sid, row in front.head(40).iterrows():
        mark = " <= chosen" if sid == selection.chosen else ""
        lines.append(
            f"  {sid:<52} {row.hardware:>9.1f} {row.cost_per_hour:>8.2f} {row.latency_ms:>7.1f}{mark}"
        )
    if len(front) > 40:
        lines.append(f"  ... {len(front) - 40} more (use --json for all)")
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


def cmd_endpoints(args: argparse.Namespace) -> int:
    """List recorded endpoints; `alive` means the process runs and /health answers."""
    from tasks.deploy import list_endpoints

    records = list_endpoints()
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records]))
        return 0
    if not records:
        print("no endpoints recorded (deploy one with the distill flow)")
        return 0
    rows = [("id", "url", "model", "server", "backend", "alive", "started")]
    rows += [
        (r.id, r.url, r.served_model_name, r.server_id, r.backend, "yes" if r.alive else "no",
         r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"))
        for r in records
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop an endpoint's server (SIGTERM, then SIGKILL after a grace period) and drop its record."""
    from tasks.deploy import EndpointNotFoundError, stop_endpoint

    try:
        record = stop_endpoint(args.endpoint)
    except EndpointNotFoundError as exc:
        return _fail(str(exc))
    note = "" if record.alive else "; it was not answering"
    print(f"stopped {record.id} ({record.url}, pid {record.pid}){note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratos", description="Distil a teacher LLM into a small student under constraints."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole distill flow on a spec and print the report")
    run.add_argument("spec", help="path to a YAML DistillSpec")
    run.add_argument("--json", action="store_true", help="print the DistillResult as one JSON object")
    run.set_defaults(func=cmd_run)
    from deployments.deploy import add_arguments
    from deployments.deploy import run as cmd_deploy

    deploy = sub.add_parser(
        "deploy", help="register the distill and redistill deployments on a Prefect server"
    )
    add_arguments(deploy)
    deploy.set_defaults(func=cmd_deploy)
    plan = sub.add_parser(
        "plan", help="choose a server for a spec (Pareto Front Grid) and compare with baselines"
    )
    plan.add_argument("spec", help="path to a YAML DistillSpec")
    plan.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    plan.add_argument("--plot", metavar="FILE.png", help="write the Pareto front (cost vs latency) to a PNG")
    plan.add_argument("--method", choices=SELECTION_METHODS, help="override servers.method from the spec")
    plan.set_defaults(func=cmd_plan)
    endpoints = sub.add_parser("endpoints", help="list deployed endpoints and whether they answer")
    endpoints.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    endpoints.set_defaults(func=cmd_endpoints)
    stop = sub.add_parser("stop", help="stop a deployed endpoint")
    stop.add_argument("endpoint", help="endpoint id or URL, as `stratos endpoints` shows them")
    stop.set_defaults(func=cmd_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        return _fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())

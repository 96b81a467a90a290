"""`swarm`: one command for people and containers.

swarm run SERVICE      start one service in the foreground (containers call this)
swarm up               the local fleet in the foreground: dispatcher, collector, workers
swarm demo             the whole swarm on this machine: 200 tasks, simulated vendors
swarm plan WORKLOAD    tasks, cost and worker replicas per vendor for a workload file
swarm shard ...        load context into a mega-shard, ask it, list shards
swarm post PROMPT      post a task (or --file of tasks); --wait for the findings
swarm status [TASK]    the fleet: members, streams, backlog, cost, shards; or one task
swarm findings ...     every finding of a task, or a run's progress (--run)
swarm dlq ...          list dead-lettered and rejected entries, replay them
swarm console          the live web console (fleet, backlog, cost, tasks; cancel, replay)
swarm --version
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from services.cli.errors import CliError
from shared.runtime.config_errors import ConfigError

# Service name -> "module:function" taking the parsed args and returning an exit code.
# Imported lazily, so `swarm` never loads a service (or its vendor SDK) it does not run.
SERVICES: dict[str, str] = {
    "simulator": "services.simulator.main:run",
    "worker": "services.worker.main:run",
    "dispatcher": "services.dispatcher.main:run",
    "megashard": "services.megashard.main:run",
    "collector": "services.collector.main:run",
    "console": "services.console.cli:run",
}
PLANNED = ("dispatcher", "worker", "megashard", "collector", "simulator", "console")


def _version() -> str:
    try:
        return version("swarmbus")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm",
        description="Run many LLM workers from many vendors as one swarm.",
    )
    parser.add_argument("--version", action="version", version=f"swarm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="start one service in the foreground",
        description="Start one service in the foreground. Every service reads REDIS_URL, "
        "SWARM_NAMESPACE and METRICS_PORT from the environment; flags override.",
    )
    run.add_argument("service", metavar="SERVICE", help=f"one of: {', '.join(PLANNED)}")
    _common(run)
    run.add_argument("--vendor", help="worker: which vendor's tasks to take")
    run.add_argument("--shard", help="megashard: which shard to serve")
    run.add_argument("--port", type=int, help="simulator: port to listen on (default 8400)")
    run.add_argument("--host", help="simulator: address to bind (default 127.0.0.1)")
    run.add_argument("--latency", type=float, help="simulator: mean latency of every model, s")
    run.add_argument("--error-rate", type=float, help="simulator: fault rate of every model")
    run.add_argument("--config", help="simulator: TOML file with per-vendor/model settings")

    route = sub.add_parser(
        "route",
        help="show where a task would go, and why, without posting it",
        description="Run the dispatcher's router on a task and print the decision: features, "
        "tier, candidates with estimated cost, and every dropped model with its "
        "reason. Assumes every vendor has live workers and none is cooling down.",
    )
    route.add_argument("prompt", help="the task's prompt")
    route.add_argument("--context-file", help="file whose text is the task's context")
    route.add_argument("--complexity", help="explicit tier (else the scorer decides)")
    route.add_argument("--vendor", help="pin a vendor")
    route.add_argument("--model", help="pin a model")
    route.add_argument("--budget", type=float, help="budget in USD for this task")
    route.add_argument("--explain", action="store_true", help="print the full reasoning")

    status = sub.add_parser(
        "status",
        help="the fleet (members, streams, backlog, cost, shards), or one task",
        description="Without TASK_ID: live members per service and vendor with capacity and "
        "in-flight work; every stream with its length and, per consumer group, pending "
        "entries and lag; dead-letter and rejected counts; cost and tasks per vendor/model "
        "so far; every shard with its tokens and live replicas. With TASK_ID: the "
        "dispatcher's record (routing decision, state) with the collector's summary and "
        "every finding. Uses REDIS_URL and SWARM_NAMESPACE.",
    )
    status.add_argument("task_id", nargs="?", help="a task's id")
    status.add_argument("--json", action="store_true", help="print it as one JSON object")

    plan = sub.add_parser(
        "plan",
        help="route a workload file offline: tasks, tokens, cost and replicas per vendor",
        description="Route every task of a workload file (JSON lines, one task object per "
        "line as the intake's `data` JSON, or one JSON array) as if every vendor had live "
        "workers, and print per vendor: tasks, estimated tokens and cost, and the worker "
        "replicas that finish it in time: ceil(tasks x latency / (within x in-flight)). "
        "Malformed entries are reported and skipped; exit code 1 if none could be planned.",
    )
    plan.add_argument("workload", metavar="WORKLOAD", help="the workload file")
    plan.add_argument(
        "--latency-s", type=float, default=2.0, help="expected seconds per task (default 2.0)"
    )
    plan.add_argument(
        "--within-s", type=float, default=600.0, help="target completion time, s (default 600)"
    )
    plan.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="tasks each replica holds at once (default: SWARM_MAX_IN_FLIGHT, else 256)",
    )

    from services.cli import shard  # noqa: PLC0415 - its SDK imports are lazy

    shard.add_parser(sub)

    from services.cli import backup, cancel, dlq, findings, init, post  # noqa: PLC0415

    post.add_parser(sub)
    cancel.add_parser(sub)
    findings.add_parser(sub)
    dlq.add_parser(sub)
    backup.add_parser(sub)
    init.add_parser(sub)

    from services.cli import demo, up  # noqa: PLC0415

    up.add_parser(sub)
    demo.add_parser(sub)

    from services.console import cli as console  # noqa: PLC0415 - no web stack imported

    console.add_parser(sub)
    from services.mcp import cli as mcp  # noqa: PLC0415 - no MCP SDK imported

    mcp.add_parser(sub)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="overrides REDIS_URL")
    p.add_argument("--namespace", help="overrides SWARM_NAMESPACE")
    p.add_argument("--metrics-port", type=int, help="overrides METRICS_PORT (0 disables)")


def _apply_overrides(args: argparse.Namespace) -> None:
    # Flags become the environment the service's settings are built from, once.
    for flag, env in (
        ("redis_url", "REDIS_URL"),
        ("namespace", "SWARM_NAMESPACE"),
        ("metrics_port", "METRICS_PORT"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value)


def cmd_run(args: argparse.Namespace) -> int:
    target = SERVICES.get(args.service)
    if target is None:
        if args.service in PLANNED:
            raise CliError(f"service {args.service!r} is not part of swarmbus {_version()} yet")
        raise CliError(f"unknown service {args.service!r}; choose one of: {', '.join(PLANNED)}")
    _apply_overrides(args)
    module, _, func = target.partition(":")
    entry = getattr(importlib.import_module(module), func)
    return int(entry(args))


def cmd_up(args: argparse.Namespace) -> int:
    from services.cli import up  # noqa: PLC0415

    _apply_overrides(args)
    return up.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from services.cli import demo  # noqa: PLC0415

    return demo.run(args)


def cmd_route(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from services.dispatcher.policy import Policy  # noqa: PLC0415
    from services.dispatcher.router import Fleet, route  # noqa: PLC0415
    from services.dispatcher.settings import DispatcherSettings  # noqa: PLC0415
    from shared.llm.registry import price_table  # noqa: PLC0415
    from shared.llm.settings import VendorSettings  # noqa: PLC0415
    from shared.protocol import DecodeError, Task, decode  # noqa: PLC0415
    from shared.runtime.config_errors import load_all  # noqa: PLC0415

    fields = {"prompt": args.prompt}
    if args.context_file:
        fields["context"] = Path(args.context_file).read_text()
    for name in ("complexity", "vendor", "model"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    if args.budget is not None:
        fields["budget_usd"] = str(args.budget)
    try:
        task = decode(Task, fields)
    except DecodeError as exc:
        raise CliError(str(exc)) from exc
    vendors, dispatcher = load_all(VendorSettings, DispatcherSettings)
    prices = price_table(vendors)
    policy = Policy.load(dispatcher.policy_file, prices)
    decision = route(task, policy, prices, Fleet.everyone_live())
    if args.explain or decision.chosen is None:
        print(decision.explain())
    else:
        c = decision.chosen
        est = "unpriced" if c.cost_usd is None else f"${c.cost_usd:.6f}"
        print(f"{c.vendor}/{c.model}  ({decision.complexity}, est. {est})")
    return 0 if decision.chosen is not None else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from services.cli.plan import format_plan, make_plan, parse_workload  # noqa: PLC0415
    from services.dispatcher.policy import Policy  # noqa: PLC0415
    from services.dispatcher.settings import DispatcherSettings  # noqa: PLC0415
    from shared.llm.registry import price_table  # noqa: PLC0415
    from shared.llm.settings import VendorSettings  # noqa: PLC0415
    from shared.runtime.config_errors import load_all  # noqa: PLC0415
    from shared.runtime.settings import BusSettings  # noqa: PLC0415

    try:
        text = Path(args.workload).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.workload}: {exc}") from exc
    bus, vendors, dispatcher = load_all(BusSettings, VendorSettings, DispatcherSettings)
    in_flight = args.in_flight if args.in_flight is not None else bus.max_in_flight
    if args.latency_s <= 0 or args.within_s <= 0 or in_flight <= 0:
        raise CliError("--latency-s, --within-s and --in-flight must be > 0")
    prices = price_table(vendors)
    tasks, problems = parse_workload(text)
    plan = make_plan(
        tasks,
        Policy.load(dispatcher.policy_file, prices),
        prices,
        latency_s=args.latency_s,
        within_s=args.within_s,
        in_flight=in_flight,
        problems=problems,
    )
    print(format_plan(plan))
    return 0 if plan.vendors else 1


def cmd_shard(args: argparse.Namespace) -> int:
    from services.cli import shard  # noqa: PLC0415
    from shared.runtime.logging import configure_logging  # noqa: PLC0415

    configure_logging("error", json=False)
    try:
        return asyncio.run(shard.run(args))
    except shard.ShardCommandError as exc:
        raise CliError(str(exc)) from None


def cmd_status(args: argparse.Namespace) -> int:
    if args.task_id is None:
        from services.cli.status import fleet_status, run_async  # noqa: PLC0415

        return run_async(fleet_status(as_json=args.json))
    from services.cli.findings import task_status  # noqa: PLC0415

    return task_status(args.task_id, as_json=args.json)


def cmd_post(args: argparse.Namespace) -> int:
    from services.cli import post  # noqa: PLC0415

    return post.run(args)


def cmd_findings(args: argparse.Namespace) -> int:
    from services.cli import findings  # noqa: PLC0415

    return findings.run(args)


def cmd_cancel(args: argparse.Namespace) -> int:
    from services.cli import cancel  # noqa: PLC0415

    return cancel.run(args)


def cmd_dlq(args: argparse.Namespace) -> int:
    from services.cli import dlq  # noqa: PLC0415

    return dlq.run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from services.cli import backup  # noqa: PLC0415

    return backup.run_export(args)


def cmd_import(args: argparse.Namespace) -> int:
    from services.cli import backup  # noqa: PLC0415

    return backup.run_import(args)


def cmd_init(args: argparse.Namespace) -> int:
    from services.cli import init  # noqa: PLC0415

    return init.run(args)


def cmd_console(args: argparse.Namespace) -> int:
    from services.console import cli as console  # noqa: PLC0415

    return console.run(args)


def cmd_mcp(args: argparse.Namespace) -> int:
    from services.mcp import cli as mcp  # noqa: PLC0415

    return mcp.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "run": cmd_run,
        "up": cmd_up,
        "demo": cmd_demo,
        "route": cmd_route,
        "plan": cmd_plan,
        "status": cmd_status,
        "shard": cmd_shard,
        "post": cmd_post,
        "findings": cmd_findings,
        "cancel": cmd_cancel,
        "dlq": cmd_dlq,
        "export": cmd_export,
        "import": cmd_import,
        "init": cmd_init,
        "console": cmd_console,
        "mcp": cmd_mcp,
    }
    try:
        return handlers[args.command](args)
    except CliError as exc:
        print(f"swarm: error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # a bad variable: one line each, naming it
        for problem in exc.problems:
            print(f"swarm: error: {problem.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""`swarm up`: the local fleet without compose, in the foreground.

Starts the dispatcher, the collector, worker processes per vendor (one each, or
`--scale VENDOR=N`, as `docker compose up --scale worker-VENDOR=N`), optionally a mega-shard
(`--shard ID`) and the vendor simulator, each as its own process (`swarm run SERVICE`) with
its own log file, in the namespace and Redis of SWARM_NAMESPACE and REDIS_URL. It prints a
line per process (name, pid, log), waits until every one heartbeats, then echoes the
services' warnings and errors (`--show`) until Ctrl-C, SIGTERM or SIGHUP: every process is
sent SIGTERM once, drains its work in flight (SWARM_DRAIN_TIMEOUT_S), and is killed if it
is still running 10 s after that. Exit code 128 + the signal's number (130 for Ctrl-C). A
process that exits on its own stops the rest, and `swarm up` exits 2 with the end of its log.

Vendors: with the simulator every worker calls it (no key needed, no cost); without it,
each calls its real API with its key. The simulator is started when no vendor key is set
(ANTHROPIC_API_KEY, GOOGLE_API_KEY, OPENAI_API_KEY, DEEPSEEK_API_KEY, or an
OPENAI_COMPATIBLE_BASE_URL), unless `--no-simulator`; `--simulator` starts it anyway (and,
the simulator being this command's own, lets workers start with a key set too:
SWARM_ALLOW_SIMULATOR_WITH_KEYS=1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cli.errors import CliError
from services.cli.fleet import Fleet, start_simulator, stoppable, until_stopped, wait_live
from shared.llm.settings import MissingCredentialsError, VendorSettings
from shared.protocol import KNOWN_VENDORS
from shared.runtime.config_errors import load
from shared.runtime.settings import redact_url

# Compose's worker services: the vendors a simulated fleet gets workers for by default.
SIMULATED = ("claude", "gemini", "openai", "deepseek", "codex")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_SHOW = {"all": 20, "warnings": 30, "errors": 40, "none": 99}
_KILL_AFTER_DRAIN_S = 10.0
_POLL_S = 0.5


def add_parser(sub: Any) -> None:
    up = sub.add_parser(
        "up",
        help="the local fleet without compose, in the foreground: dispatcher, collector, "
        "workers per vendor, optional shard and simulator",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="VENDOR=N",
        help="N worker processes for VENDOR (default 1 each; 0: none); repeatable",
    )
    up.add_argument(
        "--vendors",
        metavar="V,V",
        help="the vendors that get workers (default: every vendor with a key; with the "
        f"simulator: {', '.join(SIMULATED)})",
    )
    up.add_argument(
        "--simulator",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the vendor simulator and point every worker at it (default: when no "
        "vendor key is set)",
    )
    up.add_argument(
        "--simulator-config", type=Path, metavar="TOML", help="the simulator's latency and faults"
    )
    up.add_argument("--shard", metavar="ID", help="also start a mega-shard serving shard ID")
    up.add_argument(
        "--logs",
        type=Path,
        default=Path(".swarm-up"),
        help="one JSON-lines log file per process here (default: .swarm-up)",
    )
    up.add_argument(
        "--show",
        choices=tuple(_SHOW),
        default="warnings",
        help="which of the services' log lines to echo here (default: warnings, and errors)",
    )
    up.add_argument("--redis-url", help="overrides REDIS_URL")
    up.add_argument("--namespace", help="overrides SWARM_NAMESPACE")


@dataclass(frozen=True, slots=True)
class Plan:
    workers: dict[str, int]  # vendor -> worker processes
    simulator: bool  # start one and point every worker at it


def plan(args: argparse.Namespace, vendors: VendorSettings) -> Plan:
    """Which workers, and whether to simulate; a CliError for flags that cannot work."""
    own = vendors.model_copy(update={"simulator_url": None})
    keyed = [v for v in KNOWN_VENDORS if _missing(own, v) is None]
    simulator = args.simulator if args.simulator is not None else not keyed
    simulated = simulator or vendors.simulator_url is not None  # ours, or the user's
    if args.vendors is not None:
        chosen = [v.strip() for v in args.vendors.split(",") if v.strip()]
    else:
        chosen = list(SIMULATED) if simulated else keyed
    if not chosen:
        raise CliError(
            "no vendor has a key: set ANTHROPIC_API_KEY, GOOGLE_API_KEY, OPENAI_API_KEY or "
            "DEEPSEEK_API_KEY, or run `swarm up --simulator`"
        )
    workers = dict.fromkeys(chosen, 1)
    for item in args.scale:
        vendor, _, n = item.partition("=")
        vendor = vendor.strip().removeprefix("worker-")
        if not n.strip().isdigit():
            raise CliError(f"--scale {item}: give VENDOR=N, N a whole number (e.g. deepseek=10)")
        if vendor not in KNOWN_VENDORS:
            raise CliError(
                f"--scale {item}: unknown vendor; choose from: {', '.join(KNOWN_VENDORS)}"
            )
        if vendor not in workers:
            why = "it is not in --vendors" if args.vendors is not None else _missing(own, vendor)
            raise CliError(f"--scale {item}: {vendor} gets no workers ({why})")
        workers[vendor] = int(n)
    for vendor in workers:
        if vendor not in KNOWN_VENDORS:
            raise CliError(f"unknown vendor {vendor!r}; choose from: {', '.join(KNOWN_VENDORS)}")
        missing = None if simulated else _missing(own, vendor)
        if missing is not None:
            raise CliError(f"{missing}, or run `swarm up --simulator`")
    return Plan({v: n for v, n in workers.items() if n > 0}, simulator)


def _missing(vendors: VendorSettings, vendor: str) -> str | None:
    """What `vendor` lacks to be called (its key, or URL), or None."""
    try:
        vendors.endpoint(vendor)
    except MissingCredentialsError as exc:
        return str(exc).split(" (", 1)[0]
    return None


def run(args: argparse.Namespace) -> int:
    from services.cli.status import settings  # noqa: PLC0415
    from shared.runtime.logging import configure_logging  # noqa: PLC0415

    configure_logging("error", json=False)
    swarm, bus = settings()  # a bad REDIS_URL or SWARM_NAMESPACE: one line, exit 2
    fleet_plan = plan(args, load(VendorSettings))
    sim_config = ""
    if args.simulator_config is not None:
        try:
            sim_config = args.simulator_config.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {args.simulator_config}: {exc}") from exc
    args.logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "METRICS_PORT": "0", "LOG_JSON": "1", "PYTHONUNBUFFERED": "1"}
    fleet = Fleet(env, args.logs, grace_s=bus.drain_timeout_s + _KILL_AFTER_DRAIN_S)
    where = f"namespace {swarm.namespace!r} at {redact_url(swarm.redis_url.get_secret_value())}"
    return stoppable(
        lambda: asyncio.run(until_stopped(_up(fleet, fleet_plan, args, sim_config, where)))
    )


async def _up(
    fleet: Fleet, plan: Plan, args: argparse.Namespace, sim_config: str, where: str
) -> int:
    from services.cli.status import connected  # noqa: PLC0415

    async with connected() as session:  # Redis down: one line, exit 2, nothing started
        echo = LogEcho(fleet, _SHOW[args.show])
        try:
            async with fleet:
                if plan.simulator:
                    echo.mark("simulator")
                    url = await start_simulator(fleet, sim_config)
                    fleet.env["SWARM_SIMULATOR_URL"] = url
                    # Started here, on loopback: a key in the environment may reach it.
                    fleet.env["SWARM_ALLOW_SIMULATOR_WITH_KEYS"] = "1"
                    _started(fleet, "simulator", f"  {url}")
                await _start(fleet, echo, "dispatcher", "run", "dispatcher")
                await _start(fleet, echo, "collector", "run", "collector")
                for vendor, n in plan.workers.items():
                    for i in range(1, n + 1):
                        await _start(
                            fleet, echo, f"worker-{vendor}-{i}", "run", "worker", "--vendor", vendor
                        )
                if args.shard:
                    await _start(
                        fleet,
                        echo,
                        f"megashard-{args.shard}",
                        "run",
                        "megashard",
                        "--shard",
                        args.shard,
                    )
                wanted = Counter(_service(name) for name in fleet.procs if name != "simulator")
                _say(
                    f"logs: {fleet.logs}/ (JSON lines, one file per process); "
                    "waiting for every process to heartbeat ..."
                )
                await wait_live(session.redis, session.names, fleet, wanted)
                _say(
                    f"swarm up: {len(fleet.procs)} processes in {where}; "
                    f"{_summary(wanted)}. Ctrl-C or SIGTERM stops them."
                )
                while True:
                    echo.poll()
                    fleet.check()
                    await asyncio.sleep(_POLL_S)
        finally:
            echo.poll()  # what they said while draining
            _say(f"stopped {len(fleet.procs)} processes; logs in {fleet.logs}/")


async def _start(fleet: Fleet, echo: LogEcho, name: str, *argv: str) -> None:
    echo.mark(name)
    await fleet.start(name, *argv)
    _started(fleet, name)


def _started(fleet: Fleet, name: str, note: str = "") -> None:
    _say(f"started {name:<22} pid {fleet.procs[name].pid:<8} log {fleet.log(name)}{note}")


def _service(name: str) -> str:
    """The membership service of a process: worker-deepseek-3 -> worker-deepseek."""
    if name.startswith("megashard-"):
        return "megashard"
    return name.rsplit("-", 1)[0] if name.startswith("worker-") else name


def _summary(wanted: Counter[str]) -> str:
    return ", ".join(f"{n} {s}" if n > 1 else s for s, n in wanted.items())


def _say(text: str) -> None:
    print(text, flush=True)


class LogEcho:
    """The lines every process logs from its start (`mark`) on, at `level` and above, as
    `name level event key=value ...`; a line that is not JSON counts as info. (A process
    that exits shows the end of its log anyway: `Fleet.check`.)"""

    def __init__(self, fleet: Fleet, level: int) -> None:
        self.fleet, self.level = fleet, level
        self._offsets: dict[str, int] = {}

    def mark(self, name: str) -> None:
        """Echo `name`'s log from its current end (earlier runs' lines stay unsaid)."""
        with contextlib.suppress(OSError):
            self._offsets[name] = self.fleet.log(name).stat().st_size

    def poll(self) -> None:
        if self.level > _LEVELS["critical"]:
            return
        for name in self.fleet.procs:
            with contextlib.suppress(OSError), self.fleet.log(name).open("rb") as fh:
                fh.seek(self._offsets.get(name, 0))
                data = fh.read()
                complete = data[: data.rfind(b"\n") + 1]
                self._offsets[name] = self._offsets.get(name, 0) + len(complete)
                for raw in complete.decode(errors="replace").splitlines():
                    line = self._format(name, raw)
                    if line is not None:
                        _say(line)

    def _format(self, name: str, raw: str) -> str | None:
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return f"{name:<22} {raw}" if raw.strip() and self.level <= _LEVELS["info"] else None
        level = str(record.pop("level", "info"))
        if _LEVELS.get(level, 20) < self.level:
            return None
        record.pop("timestamp", None)
        event = record.pop("event", "")
        rest = " ".join(f"{k}={_value(v)}" for k, v in record.items())
        return f"{name:<22} {level:<8} {event} {rest}".rstrip()


def _value(v: object) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if text and " " not in text else json.dumps(text)

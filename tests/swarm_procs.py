"""The swarm as real processes, for fault tests: each service started the way production
starts it (`python -m services.cli.main run SERVICE`), with its own JSON log file, and
SIGKILLed, stopped or started again by the test.

    async with SwarmProcs(redis_url, names, tmp_path / "logs") as swarm:
        await swarm.simulator("[defaults]\\nlatency = { kind = 'fixed', mean_s = 0.2 }\\n")
        await swarm.start("dispatcher", "dispatcher")
        await swarm.start("worker-deepseek-1", "worker", "--vendor", "deepseek")
        ...
        swarm.kill("worker-deepseek-1")          # SIGKILL, no goodbye

Every process gets `CONSUMER_NAME` = its name, so its consumer, member id and log file
agree; a process started again gets a new name, as a new host would (its predecessor's
pending entries are taken over once its heartbeat expires), or keeps the old consumer name,
as a restarted container does (it replays its own pending entries). `FAST_BUS`
makes heartbeats, takeovers and reclaims happen within seconds. On exit every process
still running gets SIGTERM (then SIGKILL after a grace), and `check()` (called by the
waits here) fails the test as soon as a process the test did not kill has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from redis.asyncio import Redis

from shared.bus.membership import live_members
from shared.protocol import Names
from shared.runtime.net import free_port
from tests.chaos.checks import sim_config, simple_tier_policy

ROOT = Path(__file__).resolve().parents[1]

# Heartbeat every 0.3 s, dead after 1.5 s without one; reclaim checks every 0.3 s.
FAST_BUS = {
    "SWARM_HEARTBEAT_INTERVAL_S": "0.3",
    "SWARM_HEARTBEAT_TTL_S": "1.5",
    "SWARM_RECLAIM_INTERVAL_S": "0.3",
    "SWARM_VISIBILITY_TIMEOUT_S": "10",
    "SWARM_BLOCK_MS": "500",
    "SWARM_DRAIN_TIMEOUT_S": "3",
    "SWARM_CONNECT_TIMEOUT_S": "30",
}
_STOP_GRACE_S = 10.0


@dataclass
class Proc:
    name: str
    service: str
    process: asyncio.subprocess.Process
    log: Path
    killed: bool = False  # by the test: its exit is expected

    @property
    def running(self) -> bool:
        return self.process.returncode is None


@dataclass
class SwarmProcs:
    redis_url: str
    names: Names
    logs: Path
    env: Mapping[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    sim_url: str | None = None
    cwd: Path = ROOT  # settings read `.env` from here: a temp dir keeps a developer's out

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        base.pop("SWARM_SIMULATOR_URL", None)
        self._base_env = {
            **base,
            "REDIS_URL": self.redis_url,
            "SWARM_NAMESPACE": self.names.namespace,
            "METRICS_PORT": "0",
            "LOG_JSON": "1",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            "SWARM_COLLECTOR_EXPORT_PATH": str(self.logs / "findings.jsonl"),
            **FAST_BUS,
            **self.env,
        }

    async def __aenter__(self) -> SwarmProcs:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_all()

    # -- processes -------------------------------------------------------------------------
    async def start(
        self,
        name: str,
        service: str,
        *argv: str,
        env: Mapping[str, str] | None = None,
        consumer: str | None = None,
        module: str = "services.cli.main",
    ) -> Proc:
        """Start `swarm run SERVICE ARGV...` as `name` (its log file). Its consumer name is
        `name` unless `consumer` is given: pass a killed process's name to restart it the
        way a container restarts (same name: it replays its own pending entries first).
        `module` runs a test's wrapper of the CLI instead (one that starves its loop)."""
        if name in self.procs:
            raise ValueError(f"{name} was started before; give a new process a new name")
        log = self.logs / f"{name}.log"
        extra = {"SWARM_SIMULATOR_URL": self.sim_url} if self.sim_url else {}
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                "run",
                service,
                *argv,
                cwd=self.cwd,
                env={**self._base_env, **extra, "CONSUMER_NAME": consumer or name, **(env or {})},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, service, process, log)
        self.procs[name] = proc
        return proc

    async def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` and wait for the process to exit."""
        proc = self.procs[name]
        proc.killed = True
        if proc.running:
            with contextlib.suppress(ProcessLookupError):
                proc.process.send_signal(sig)
        await asyncio.wait_for(proc.process.wait(), _STOP_GRACE_S + 5)

    def send(self, name: str, sig: signal.Signals) -> None:
        """Send `sig` and return (SIGSTOP freezes a process: its heartbeat lapses as in a
        long pause; SIGCONT thaws it)."""
        self.procs[name].process.send_signal(sig)

    def running(self, prefix: str = "") -> list[Proc]:
        return [p for p in self.procs.values() if p.running and p.name.startswith(prefix)]

    def check(self) -> None:
        """Fail at once if a process the test did not kill has exited."""
        for proc in self.procs.values():
            if not proc.killed and proc.process.returncode is not None:
                raise AssertionError(
                    f"{proc.name} exited with code {proc.process.returncode} (logs in "
                    f"{self.logs}); its log ends:\n{self.tail(proc.name)}"
                )

    def tail(self, name: str, chars: int = 3000) -> str:
        return self.procs[name].log.read_text(errors="replace")[-chars:]

    async def stop_all(self) -> None:
        live = [p for p in self.procs.values() if p.running]
        for proc in live:
            proc.killed = True
            with contextlib.suppress(ProcessLookupError):
                proc.process.send_signal(signal.SIGTERM)
        if not live:
            return
        _, late = await asyncio.wait(
            [asyncio.ensure_future(p.process.wait()) for p in live], timeout=_STOP_GRACE_S
        )
        for proc in live:
            if proc.running:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.kill()
        if late:
            await asyncio.wait(late, timeout=5)

    # -- the simulator ---------------------------------------------------------------------
    async def simulator(self, config_toml: str, name: str = "simulator") -> str:
        """Start the simulator with this config; every process started after it uses it."""
        config = self.logs / f"{name}.toml"
        config.write_text(config_toml)
        port = free_port()
        await self.start(name, "simulator", "--port", str(port), "--config", str(config))
        url = f"http://127.0.0.1:{port}"

        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{url}/_sim/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await self.wait_for(healthy, timeout=20, what="the simulator to answer")
        self.sim_url = url
        return url

    async def sim_stats(self) -> dict[str, Any]:
        assert self.sim_url is not None
        async with httpx.AsyncClient(timeout=5) as client:
            stats: dict[str, Any] = (await client.get(f"{self.sim_url}/_sim/stats")).json()
        return stats

    # -- waiting and reading back ----------------------------------------------------------
    async def wait_for(
        self,
        probe: Callable[[], Awaitable[Any]],
        *,
        timeout: float,
        what: str,
        interval: float = 0.1,
    ) -> Any:
        """`tests.waiting.eventually`, failing at once if a process died unexpectedly."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            value = await probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what} (last: {value!r}); "
                    f"logs in {self.logs}, namespace {self.names.namespace}"
                )
            await asyncio.sleep(interval)

    async def wait_live(self, redis: Redis, names: Names, wanted: Mapping[str, int]) -> None:
        """Until at least `wanted[service]` members of each service heartbeat."""

        async def enough() -> bool:
            members = await live_members(redis, names)
            have: dict[str, int] = {}
            for m in members:
                have[m.get("service", "")] = have.get(m.get("service", ""), 0) + 1
            return all(have.get(s, 0) >= n for s, n in wanted.items())

        await self.wait_for(enough, timeout=30, what=f"live services {dict(wanted)}")

    def events(self, event: str, prefix: str = "") -> list[dict[str, Any]]:
        """Every JSON log line with this `event`, from the logs of processes named
        `prefix...`."""
        found = []
        for proc in self.procs.values():
            if not proc.name.startswith(prefix) or not proc.log.exists():
                continue
            for line in proc.log.read_text(errors="replace").splitlines():
                if f'"{event}"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == event:
                        found.append({"process": proc.name, **record})
        return found


@contextlib.asynccontextmanager
async def deepseek_fleet(redis_url: str, names: Names, logs: Path) -> AsyncIterator[SwarmProcs]:
    """The smallest whole swarm: simulator, dispatcher (simple tier: deepseek-flash only),
    collector and one deepseek worker, `worker-deepseek-1`."""
    async with SwarmProcs(redis_url, names, logs) as swarm:
        await swarm.simulator(sim_config(0.05))
        policy = simple_tier_policy(logs / "policy.toml", "deepseek-flash")
        await swarm.start("dispatcher", "dispatcher", env=policy)
        await swarm.start("collector", "collector")
        await swarm.start("worker-deepseek-1", "worker", "--vendor", "deepseek")
        yield swarm

"""No secret leaves the process that holds it, through any door a user can look through.

The whole swarm runs as its own processes (dispatcher, a worker each for Claude, Gemini,
OpenAI and DeepSeek, the collector, a Gemini mega-shard), with debug logging, against a
Redis that needs a password, with distinctive fake vendor keys that are really sent: each
vendor's own base-URL variable points it at the simulator, which records every key it is
shown. The flow includes successes, vendor errors (429s retried then given up, an
exhausted quota, a context too long, a task rerouted across vendors), context queries and
a malformed task. Then no key and no password may appear in any log line, any Redis key
or value of any type, any finding (stream or export file), any metric exposition, or any
output of the `swarm` commands an operator would run.

Each scanner is checked on planted values first, so one that reads nothing cannot pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from services.simulator.config import SimulatorConfig
from services.simulator.http import Request
from services.simulator.server import Simulator
from shared.bus.membership import live_members
from shared.llm.settings import SIMULATOR_PREFIX
from shared.protocol import Finding, Names, Status, Task, decode, encode
from shared.runtime.net import free_port
from tests.security.leaks import Found, Secret, scan_blobs, scan_redis
from tests.waiting import eventually

KEY_ENV = {
    "claude": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "gemini": ("GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "deepseek": ("DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL"),
}
SHARD = "history"
# Variables of the test runner's own environment that must not steer the swarm under test.
_STRIP = ("REDIS_URL", "SWARM_", "METRICS_PORT", "LOG_", "CONSUMER_NAME", "OPENAI_COMPATIBLE")


def _secret(label: str) -> Secret:
    random_part = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    return Secret(label, f"{label.lower().replace('_', '-')}-fake-{random_part}", random_part)


@dataclass
class Swarm:
    """The processes under test, their logs, and where their metrics are served."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, bytes] = field(default_factory=dict)  # CLI command -> its output

    async def start(self, name: str, *argv: str, **env: str) -> None:
        port = free_port()
        self.metrics_ports[name] = port
        with (
            (self.logs / f"{name}.out").open("wb") as out,
            (self.logs / f"{name}.err").open("wb") as err,
        ):
            self.procs[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli.main",
                *argv,
                env={**self.env, "METRICS_PORT": str(port), **env},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.returncode is not None:
                tail = (self.logs / f"{name}.out").read_bytes()[-2000:]
                err = (self.logs / f"{name}.err").read_bytes()[-2000:]
                raise AssertionError(f"{name} exited with {proc.returncode}: {tail!r} {err!r}")

    async def command(self, *argv: str, ok: bool = True) -> bytes:
        """Run a `swarm` command as an operator would; keep its output for the scan."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            *argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        self.outputs["swarm " + " ".join(argv)] = out
        if ok:
            assert proc.returncode == 0, f"swarm {' '.join(argv)} failed: {out[-2000:]!r}"
        return out

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
def secrets() -> dict[str, Secret]:
    return {
        label: _secret(label) for label in ["REDIS_PASSWORD", *(k for k, _ in KEY_ENV.values())]
    }


@pytest.fixture
def locked_redis_url(secrets: dict[str, Secret]) -> Iterator[str]:
    """A private redis-server that answers only to the password."""
    password = secrets["REDIS_PASSWORD"].value
    try:
        with private_redis_server(
            config=f"requirepass {password}\n",
            probe_url=f"redis://:{password}@127.0.0.1:{{port}}/0",
        ) as (url, _proc):
            yield url
    except RuntimeError as exc:
        pytest.fail(f"no redis-server for the secrets test: {exc}")


@pytest.fixture
async def locked_redis(locked_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(locked_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, set[str]]]:
    """The vendors' stand-in, recording every credential a request carries."""
    sim = Simulator(SimulatorConfig(seed=5).with_overrides(latency_s=0.01))
    shown: set[str] = set()
    handle = sim._handle  # wrapped before start(), which hands it to the HTTP server

    async def recording(request: Request) -> Any:
        for header in ("x-api-key", "x-goog-api-key", "authorization"):
            value = request.headers.get(header, "")
            if value:
                shown.add(value.removeprefix("Bearer").strip())
        shown.update(request.query.get("key", []))
        return await handle(request)

    sim._handle = recording  # type: ignore[method-assign]
    await sim.start()
    yield sim, shown
    await sim.stop()


@pytest.fixture
async def swarm(
    tmp_path: Path,
    locked_redis_url: str,
    secrets: dict[str, Secret],
    simulator: tuple[Simulator, set[str]],
) -> AsyncIterator[Swarm]:
    sim, _shown = simulator
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIP)}
    env = {k: v for k, v in env.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    names = Names(f"sec{uuid.uuid4().hex[:8]}")
    env |= {
        "REDIS_URL": locked_redis_url,
        "SWARM_NAMESPACE": names.namespace,
        "LOG_LEVEL": "debug",
        "LOG_JSON": "1",
        "PYTHONUNBUFFERED": "1",
        "SWARM_HEARTBEAT_INTERVAL_S": "0.3",
        "SWARM_HEARTBEAT_TTL_S": "1.5",
        "SWARM_BLOCK_MS": "200",
        "SWARM_DRAIN_TIMEOUT_S": "5",
        "SWARM_WORKER_MAX_ATTEMPTS": "2",
        "SWARM_WORKER_BACKOFF_BASE_S": "0.05",
        "SWARM_WORKER_BACKOFF_MAX_S": "0.2",
        "SWARM_COLLECTOR_EXPORT_PATH": str(tmp_path / "findings.jsonl"),
    }
    for vendor, (key_env, url_env) in KEY_ENV.items():
        env[key_env] = secrets[key_env].value
        env[url_env] = sim.base_url + SIMULATOR_PREFIX[vendor]
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Swarm(env, logs)
    try:
        yield fleet
    finally:
        await fleet.stop()


async def _wait_up(redis: Redis, names: Names, swarm: Swarm, *services: str) -> None:
    async def up() -> bool:
        swarm.check()
        members = await live_members(redis, names)
        loaded = any(m.get("loaded_tokens", "0") != "0" for m in members)
        return set(services) <= {m.get("service", "") for m in members} and loaded

    await eventually(up, timeout=60, interval=0.2, what=f"{', '.join(services)} to join")


def _tasks() -> list[Task]:
    def task(label: str, prompt: str, **fields: Any) -> Task:
        return Task(task_id=f"sec-{label}-{uuid.uuid4().hex[:8]}", prompt=prompt, **fields)

    ok = [task(v, "Summarise our refund policy in one line.", vendor=v) for v in KEY_ENV]
    return [
        *ok,
        task("ctx", "When was the 2021 database failover?", vendor="claude", parent_shard=SHARD),
        task("ctx2", "What was the outage budget?", vendor="deepseek", parent_shard=SHARD),
        task("429", "Classify this ticket. [[sim:429]]", vendor="deepseek"),
        task("quota", "Classify this ticket. [[sim:quota]]", vendor="openai"),
        task("ctxlen", "Classify this ticket. [[sim:context]]", vendor="claude"),
        task("reroute", "Classify this ticket. [[sim:429]]", complexity="simple"),
        task("gemini429", "Classify this ticket. [[sim:429]]", vendor="gemini"),
    ]


def _scrape(swarm: Swarm) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, port in swarm.metrics_ports.items():
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert reply.status_code == 200, f"{name} serves no metrics"
        out[f"{name} /metrics"] = reply.content
        for path in ("/livez", "/readyz"):  # a failing check's reason must not leak either
            reply = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert reply.status_code in (200, 503), f"{name} {path}: {reply.status_code}"
            out[f"{name} {path}"] = reply.content
    return out


def _leaks(*found: Found) -> list[str]:
    return [leak for f in found for leak in f.leaks]


@pytest.mark.timeout(240)
async def test_no_key_or_password_leaks_through_logs_redis_findings_or_metrics(
    tmp_path: Path,
    locked_redis: Redis,
    secrets: dict[str, Secret],
    simulator: tuple[Simulator, set[str]],
    swarm: Swarm,
) -> None:
    _sim, shown = simulator
    names = Names(swarm.env["SWARM_NAMESPACE"])
    every = list(secrets.values())

    # The scanners catch what they are meant to: planted values of every type, in a
    # namespace of their own, then removed before the real scan.
    planted = Names(f"planted{uuid.uuid4().hex[:8]}")
    a, b, c, d, e = every
    await locked_redis.set(planted.task("s"), f"key={a.value}")
    await locked_redis.hset(planted.task("h"), "auth", f"Bearer {b.value}")  # type: ignore[misc]
    await locked_redis.xadd(planted.findings, {"error": f"401 for ...{c.random_part[4:24]}..."})
    await locked_redis.sadd(planted.shards, d.value)  # type: ignore[misc]
    await locked_redis.zadd(planted.members, {e.value: 1})
    await locked_redis.rpush(planted.task("l"), a.value)  # type: ignore[misc]
    caught = await scan_redis(locked_redis, every, match=f"{planted.namespace}:*")
    assert {leak.split(" in ")[0] for leak in caught.leaks} == set(secrets)
    assert set(caught.read) == {"string", "hash", "stream", "set", "zset", "list"}
    assert scan_blobs({"planted": b"x " + e.value.encode()}, every, "file").leaks
    await locked_redis.delete(*[k async for k in locked_redis.scan_iter(f"{planted.namespace}:*")])

    # The swarm at work: the shard loaded and served, every vendor called, errors included.
    doc = tmp_path / "ops-2021.md"
    doc.write_text("2021-03-14: database failover in eu-west took 4 minutes. " * 40)
    await swarm.command("shard", "load", SHARD, str(doc), "--vendor", "gemini")
    await swarm.start("collector", "run", "collector")
    for vendor in KEY_ENV:
        await swarm.start(f"worker-{vendor}", "run", "worker", "--vendor", vendor)
    await swarm.start("megashard", "run", "megashard", "--shard", SHARD)
    workers = [f"worker-{v}" for v in KEY_ENV]
    await _wait_up(locked_redis, names, swarm, "collector", "megashard", *workers)
    # The dispatcher last: its first view of the fleet has every worker in it (a task pinned
    # to a vendor it does not see live yet would be refused, and never get a finding).
    await swarm.start("dispatcher", "run", "dispatcher")
    await _wait_up(locked_redis, names, swarm, "dispatcher")

    tasks = _tasks()
    for t in tasks:
        await locked_redis.xadd(names.intake, encode(t))  # type: ignore[arg-type]
    await locked_redis.xadd(names.intake, {"prompt": "", "complexity": "galactic"})

    async def all_collected() -> bool:
        swarm.check()
        for t in tasks:
            if not await locked_redis.exists(names.task_summary(t.task_id)):
                return False
        return True

    await eventually(all_collected, timeout=90, interval=0.3, what="a finding for every task")
    await swarm.command("shard", "ask", SHARD, "When was the failover?", "--timeout", "30")
    await swarm.command("status")
    await swarm.command("findings", tasks[0].task_id)
    await swarm.command("dlq", "list")
    await swarm.command("dlq", "list", "--stream", "rejected")
    metrics = _scrape(swarm)
    live_redis = await scan_redis(locked_redis, every)  # member hashes and zset, while up
    await swarm.stop()

    # What the flow did, so a quiet swarm cannot pass: every key was sent, errors happened.
    for vendor, (key_env, _url) in KEY_ENV.items():
        assert secrets[key_env].value in shown, f"{vendor}'s key never reached the vendor"
    findings = [decode(Finding, f) for _id, f in await locked_redis.xrange(names.findings)]
    by_task = {f.task_id: f for f in findings}
    assert {t.task_id for t in tasks} <= set(by_task)
    failed = [f for f in findings if f.status is Status.FAILED]
    assert len(failed) >= 4 and all(f.error for f in failed), "the error paths ran"
    assert any(f.sources for f in findings), "a task drew on the shard's context"
    assert await locked_redis.xlen(names.rejected) == 1
    assert all(b"swarm_" in body for key, body in metrics.items() if key.endswith("/metrics"))

    # And now: no secret anywhere.
    logs = {p.name: p.read_bytes() for p in sorted(swarm.logs.iterdir())}
    assert all(logs[f"{name}.out"] for name in swarm.procs), "every service logged"
    assert all(b'"level": "debug"' in logs[f"{name}.out"] for name in swarm.procs), (
        "debug logging was on"
    )
    exported = (tmp_path / "findings.jsonl").read_bytes()
    assert exported.count(b"\n") >= len(tasks)
    found_logs = scan_blobs(logs, every, "log")
    found_redis = await scan_redis(locked_redis, every)
    assert {"stream", "hash", "string", "zset", "set"} <= set(found_redis.read | live_redis.read)
    found_findings = scan_blobs(
        {f"finding {f.finding_id}": f.model_dump_json().encode() for f in findings}
        | {"findings.jsonl": exported},
        every,
        "finding",
    )
    found_metrics = scan_blobs(metrics, every, "metrics")
    found_cli = scan_blobs(swarm.outputs, every, "command output")
    leaks = _leaks(live_redis, found_logs, found_redis, found_findings, found_metrics, found_cli)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)

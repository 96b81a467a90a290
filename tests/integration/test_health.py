"""/metrics, /livez and /readyz, served from a service's own event loop.

In-process: the HTTP edges (404, 400, 405, 408, 431, busy) and the loop checks (a blocked
loop answers nothing; a lagging one says 503). As real processes (`swarm run ...` on a
private redis-server): /readyz turns 503 within 10 s of Redis going away and 200 within
10 s of its return, and the collector's /readyz names its export when it breaks.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.bus import Bus
from shared.protocol import Finding, Names, encode
from shared.runtime import health
from shared.runtime.health import HealthServer, ReadinessCheck, RedisPing
from shared.runtime.metrics import Metrics
from shared.runtime.net import free_port
from shared.runtime.settings import BusSettings
from tests.swarm_procs import SwarmProcs
from tests.waiting import eventually


@pytest.fixture
async def metrics() -> Metrics:
    return Metrics.create()


@pytest.fixture
async def checks() -> list[ReadinessCheck]:
    return []


@pytest.fixture
async def server(metrics: Metrics, checks: list[ReadinessCheck]) -> AsyncIterator[HealthServer]:
    async with HealthServer(metrics.registry, checks) as srv:
        await srv.start(0, "127.0.0.1")
        yield srv


def raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` as is; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout) as conn:
        conn.sendall(request)
        out = b""
        while chunk := conn.recv(65536):
            out += chunk
        return out


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


async def get(port: int, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", headers=headers)


# -- in process ---------------------------------------------------------------------------------
async def test_metrics_serve_the_registry(server: HealthServer, metrics: Metrics) -> None:
    metrics.deliveries.labels("s", "g", "acked").inc(3)
    reply = await get(server.port, "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'swarm_deliveries_total{group="g",outcome="acked",stream="s"} 3.0' in reply.text
    assert reply.headers["connection"] == "close"
    # Prometheus asks for OpenMetrics, as it did of prometheus_client's own server.
    om = await get(server.port, "/metrics", accept="application/openmetrics-text;version=1.0.0")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    head = await asyncio.to_thread(raw, server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")  # no body
    assert (await get(server.port, "/metrics?name[]=x")).status_code == 200  # query ignored


async def test_bad_requests_and_unknown_paths(server: HealthServer) -> None:
    port = server.port
    assert (await get(port, "/")).status_code == 404
    assert (await get(port, "/livez/x")).status_code == 404
    for bad in (
        b"garbage\r\n\r\n",
        b"GET /livez\r\n\r\n",
        b"GET livez HTTP/1.1\r\n\r\n",
        b"GET /livez SPDY/3\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /l\xffvez HTTP/1.1\r\n\r\n",
    ):
        reply = await asyncio.to_thread(raw, port, bad)
        assert status_of(reply) == 400, (bad, reply)
    post = await asyncio.to_thread(raw, port, b"POST /livez HTTP/1.1\r\n\r\n")
    assert status_of(post) == 405 and b"Allow: GET, HEAD" in post
    huge = b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * 2 * health.MAX_HEAD_BYTES + b"\r\n\r\n"
    assert status_of(await asyncio.to_thread(raw, port, huge)) == 431
    assert (await get(port, "/livez")).status_code == 200  # still serving


async def test_a_slow_client_is_cut_off_and_a_flood_is_refused(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(health, "MAX_CONNECTIONS", 2)
    started = time.monotonic()
    reply = await asyncio.to_thread(raw, server.port, b"GET /livez HTTP/1.1\r\n")  # never ends
    assert status_of(reply) == 408 and time.monotonic() - started < 3
    idle = [socket.create_connection(("127.0.0.1", server.port), 5) for _ in range(2)]
    try:
        await eventually(lambda: _held(server, 2), what="two idle connections held")
        busy = await asyncio.to_thread(raw, server.port, b"GET /livez HTTP/1.1\r\n\r\n")
        assert status_of(busy) == 503 and busy.endswith(b"busy\n")
    finally:
        for conn in idle:
            conn.close()
    await eventually(lambda: _held(server, 0), what="idle connections dropped")
    assert (await get(server.port, "/livez")).status_code == 200


async def _held(server: HealthServer, n: int) -> bool:
    return len(server._writers) == n


async def test_livez_fails_while_the_loop_is_blocked(server: HealthServer) -> None:
    assert (await get(server.port, "/livez")).status_code == 200
    outcome: list[object] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/livez", timeout=1) as r:
                outcome.append(r.status)
        except urllib.error.HTTPError as exc:
            outcome.append(exc.code)
        except (TimeoutError, urllib.error.URLError) as exc:
            outcome.append(exc)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(2.5)  # noqa: ASYNC251 - the point: the event loop is stuck
    prober.join(5)
    [result] = outcome
    assert result == 503 or isinstance(result, TimeoutError | urllib.error.URLError), result
    assert (await get(server.port, "/livez")).status_code == 200  # answers once unblocked


async def test_livez_is_503_while_the_loop_lags(metrics: Metrics) -> None:
    # A watchdog that ticks rarely stands in for a loop too busy to run it on time.
    async with HealthServer(metrics.registry, [], tick_s=30, max_lag_s=0.3) as srv:
        await srv.start(0, "127.0.0.1")
        assert (await get(srv.port, "/livez")).status_code == 200

        async def lagging() -> httpx.Response | None:
            reply = await get(srv.port, "/livez")
            return reply if reply.status_code == 503 else None

        reply = await eventually(lagging, timeout=3, what="/livez to report the lag")
        assert reply is not None and reply.text.startswith("event loop lagging: last tick")


async def test_readyz_lists_every_failing_check(
    server: HealthServer, checks: list[ReadinessCheck], redis_url: str
) -> None:
    ping = RedisPing(redis_url)
    checks.append(ping)
    try:
        assert (await get(server.port, "/readyz")).text == "ok\n"

        async def sink() -> str | None:
            return "export /x: not writable (postgresql://u:hunter22@db/x)"

        async def broken() -> str | None:
            raise RuntimeError("boom")

        async def hangs() -> str | None:
            await asyncio.sleep(60)
            return None

        checks.extend([sink, broken, hangs])
        started = time.monotonic()
        reply = await get(server.port, "/readyz")
        assert reply.status_code == 503 and time.monotonic() - started < 4
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        lines = reply.text.splitlines()
        assert lines == [
            "export /x: not writable (postgresql://u:***@db/x)",
            "broken: RuntimeError: boom",
            "hangs: no answer within 2s",
        ]
        del checks[1:]
        assert (await get(server.port, "/readyz")).status_code == 200
    finally:
        await ping.aclose()


async def test_redis_ping_names_what_failed() -> None:
    ping = RedisPing(f"redis://swarm:s3cret-pw@127.0.0.1:{free_port()}/0")
    try:
        reason = await ping()
    finally:
        await ping.aclose()
    assert reason is not None and reason.startswith("redis: ConnectionError")
    assert "s3cret" not in reason


async def test_a_subscription_is_a_readiness_check_while_it_runs(
    redis: Redis, names: Names, bus_settings: BusSettings
) -> None:
    checks: list[ReadinessCheck] = []
    settings = bus_settings.model_copy(update={"max_in_flight": 1})
    bus = Bus(redis, names, settings, Metrics.create(), readiness=checks)
    sub = bus.subscribe(names.intake, "g", "c1")
    assert checks == []
    await sub.start()
    assert checks == [sub.readiness]
    assert await sub.readiness() is None
    # Full (the one slot held, unacked): quiet, yet ready, however long it lasts.
    await bus.publish(names.intake, {"n": "1"})
    delivery = await asyncio.wait_for(anext(sub), 5)
    await eventually(lambda: _full(sub), what="the reader to wait for room")
    sub._healthy_at -= 3600
    assert await sub.readiness() is None
    await delivery.ack()
    sub.stop()
    assert await sub.readiness() == f"subscription {names.intake} (g): stopping"
    await sub.close()
    assert checks == []


async def _full(sub: object) -> bool:
    return bool(sub._waiting_for_room)  # type: ignore[attr-defined]


# -- real processes -----------------------------------------------------------------------------
async def readyz(port: int) -> tuple[int, str]:
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            reply = await client.get(f"http://127.0.0.1:{port}/readyz")
            return reply.status_code, reply.text
    except httpx.HTTPError as exc:
        return 0, repr(exc)


async def wait_readyz(
    swarm: SwarmProcs, port: int, want: Callable[[int], bool], timeout: float, what: str
) -> tuple[int, str, float]:
    started = time.monotonic()

    async def probe() -> tuple[int, str] | None:
        status, text = await readyz(port)
        return (status, text) if want(status) else None

    status, text = await swarm.wait_for(probe, timeout=timeout, what=what, interval=0.2)
    return status, text, time.monotonic() - started


@pytest.mark.slow
async def test_readyz_follows_redis_going_away_and_coming_back(tmp_path: Path) -> None:
    names = Names("health")
    redis_port, port = free_port(), free_port()
    with (
        tempfile.TemporaryDirectory() as workdir,
        private_redis_server(port=redis_port, appendonly=True, workdir=workdir) as (url, proc),
    ):
        async with SwarmProcs(url, names, tmp_path / "logs") as swarm:
            await swarm.start("dispatcher", "dispatcher", env={"METRICS_PORT": str(port)})
            await wait_readyz(swarm, port, lambda s: s == 200, 30, "the dispatcher ready")
            metrics = await get(port, "/metrics")
            assert metrics.status_code == 200 and "swarm_fleet_live_members" in metrics.text
            assert (await get(port, "/livez")).status_code == 200

            proc.kill()
            proc.wait()
            _s, text, took = await wait_readyz(
                swarm, port, lambda s: s == 503, 10, "/readyz to say 503 without Redis"
            )
            print(f"503 {took:.1f}s after Redis went away: {text!r}")
            assert text.startswith("redis: ConnectionError")
            assert (await get(port, "/livez")).status_code == 200  # alive, only not ready

            # Away for longer than a read's BLOCK plus grace: the reader is reported too.
            async def reader_stale() -> str | None:
                _status, text = await readyz(port)
                return text if "no successful read" in text else None

            text = await swarm.wait_for(reader_stale, timeout=15, what="the reader reported")
            assert f"subscription {names.intake} (dispatcher): no successful read for" in text
            assert "(last error: ConnectionError" in text

            with private_redis_server(port=redis_port, appendonly=True, workdir=workdir):
                _s, _text, took = await wait_readyz(
                    swarm, port, lambda s: s == 200, 10, "/readyz to say 200 with Redis back"
                )
                print(f"200 {took:.1f}s after Redis came back")
                swarm.check()


@pytest.mark.slow
async def test_the_collectors_readyz_names_its_broken_export(
    redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    moved, full = free_port(), free_port()
    export = tmp_path / "findings.jsonl"
    async with SwarmProcs(redis_url, names, tmp_path / "logs") as swarm:
        common = {"SWARM_COLLECTOR_EXPORT_PATH": str(export), "METRICS_PORT": str(moved)}
        await swarm.start("collector", "collector", env=common)
        await swarm.start(
            "collector-full",
            "collector",
            env={"SWARM_COLLECTOR_EXPORT_PATH": "/dev/full", "METRICS_PORT": str(full)},
        )
        for port in (moved, full):
            await wait_readyz(swarm, port, lambda s: s == 200, 30, "the collectors ready")

        export.rename(tmp_path / "rotated.jsonl")
        _s, text, _t = await wait_readyz(swarm, moved, lambda s: s == 503, 10, "export gone")
        assert text == (
            f"export {export}: FileNotFoundError: [Errno 2] No such file or directory: "
            f"'{export}' (moved or deleted: findings go to an unlinked file)\n"
        )
        export.write_text("")
        _s, text, _t = await wait_readyz(swarm, moved, lambda s: s == 503, 10, "export replaced")
        assert text == f"export {export}: replaced by another file since it was opened\n"

        # A full disk shows at the first write: the finding stays pending, the check says why.
        await swarm.kill("collector", signal.SIGTERM)  # so collector-full gets the finding
        finding = Finding(
            task_id="t-1", worker_id="w", vendor="deepseek", model="m", summary="s", latency_ms=1
        )
        await redis.xadd(names.findings, encode(finding))  # type: ignore[arg-type]

        async def full_disk() -> str | None:
            status, text = await readyz(full)
            return text if status == 503 and "last write failed" in text else None

        text = await swarm.wait_for(full_disk, timeout=20, what="the full disk reported")
        assert text == (
            "export /dev/full: the last write failed: OSError: [Errno 28] No space left on device\n"
        )


@pytest.mark.slow
async def test_the_dispatcher_shows_every_vendor_queue_counter_before_its_first_task(
    redis_url: str, names: Names, tmp_path: Path
) -> None:
    """A counter that appears with its first burst already counted is one increase()
    never sees: the lag alert would miss a vendor's first backlog after a restart."""
    port = free_port()
    async with SwarmProcs(redis_url, names, tmp_path / "logs") as swarm:
        await swarm.start("dispatcher", "dispatcher", env={"METRICS_PORT": str(port)})
        await wait_readyz(swarm, port, lambda s: s == 200, 30, "the dispatcher ready")
        text = (await get(port, "/metrics")).text
    for vendor in ("deepseek", "claude", "openai-compatible"):
        for stream in names.vendor_task_levels(vendor):
            assert f'swarm_published_messages_total{{stream="{stream}"}} 0.0' in text, stream

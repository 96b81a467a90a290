"""A service's metrics and health endpoints, served from its own asyncio loop.

    GET /metrics  the Prometheus exposition of the service's registry
    GET /livez    200 while the loop answers and ticks on time; 503 when it lags
    GET /readyz   200 when every readiness check passes; 503 with the reasons otherwise

Served on the loop on purpose (prometheus_client's server runs in a thread, which
answers while the loop is stuck): a blocked loop answers nothing, so a probe times out.
The watchdog ticks every `tick_s`; a tick older than `max_lag_s` means a loop that still
runs but lags badly (503). A readiness check is `async () -> str | None`: None when fine,
else a short reason (no secrets: reasons are scrubbed like log lines anyway). Checks run
concurrently, each bounded by `check_timeout_s`.

A deliberately small HTTP/1.1 server: GET and HEAD, one request per connection
(`Connection: close`), the head bounded in size and time, so a slow or hostile client
cannot pin it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.runtime.logging import scrub_text

log = structlog.get_logger("swarm.health")

ReadinessCheck = Callable[[], Awaitable[str | None]]

MAX_HEAD_BYTES = 8192  # request line and headers together
MAX_CONNECTIONS = 64  # answered at once; more get 503 at once
READ_TIMEOUT_S = 5.0  # to send the whole request head
WRITE_TIMEOUT_S = 5.0  # to take the whole response
LINGER_S = 1.0  # after answering, for the client to close its side
_MAX_REASON_CHARS = 300
_TEXT = "text/plain; charset=utf-8"


class HealthServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Sequence[ReadinessCheck],
        *,
        tick_s: float = 0.25,
        max_lag_s: float = 1.0,
        check_timeout_s: float = 2.0,
    ) -> None:
        self._registry = registry
        self._checks = checks  # read at each /readyz: checks added later count
        self._tick_s = tick_s
        self._max_lag_s = max_lag_s
        self._check_timeout_s = check_timeout_s
        self._server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready: bool | None = None  # last answer, to log changes only

    async def start(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        """Listen on host:port (port 0: any free port, see `port`)."""
        try:
            self._server = await asyncio.start_server(
                self._connection, host, port, limit=MAX_HEAD_BYTES, reuse_address=True
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot serve metrics and health on {host}:{port} (METRICS_PORT): "
                f"{exc.strerror or exc}",
            ) from None
        self._last_tick = time.monotonic()
        self._watchdog = asyncio.create_task(self._tick(), name="health-watchdog")

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the answers -----------------------------------------------------------------------
    def livez(self) -> tuple[int, str]:
        lag = time.monotonic() - self._last_tick
        if lag > self._max_lag_s:
            return 503, f"event loop lagging: last tick {lag:.1f}s ago (max {self._max_lag_s}s)\n"
        return 200, "ok\n"

    async def readyz(self) -> tuple[int, str]:
        checks = list(self._checks)
        results = await asyncio.gather(*(self._run(check) for check in checks))
        # One line each: multi-line driver messages are folded.
        reasons = [scrub_text(" ".join(r.split()))[:_MAX_REASON_CHARS] for r in results if r]
        ready = not reasons
        if ready != self._ready:
            if ready:
                log.info("health.ready")
            else:
                log.warning("health.not_ready", reasons=reasons)
            self._ready = ready
        if ready:
            return 200, "ok\n"
        return 503, "".join(f"{r}\n" for r in reasons)

    async def _run(self, check: ReadinessCheck) -> str | None:
        try:
            async with asyncio.timeout(self._check_timeout_s):
                return await check()
        except TimeoutError:
            return f"{_name(check)}: no answer within {self._check_timeout_s:g}s"
        except Exception as exc:
            return f"{_name(check)}: {type(exc).__name__}: {exc}"

    async def metrics(self, accept: str) -> tuple[int, str, bytes]:
        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(self._registry)

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(self._tick_s)

    # -- HTTP ------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if len(self._writers) > MAX_CONNECTIONS:
                await _reply(writer, 503, _TEXT, b"busy\n", head_only=False)
                return
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                await _reply(writer, 408, _TEXT, b"request head not received in time\n")
                return
            except asyncio.LimitOverrunError:
                await _reply(writer, 431, _TEXT, b"request head too large\n")
                return
            except asyncio.IncompleteReadError:
                return  # the client left before finishing its request
            method, path, headers = _parse(head)
            status, content_type, body = await self._route(method, path, headers)
            await _reply(writer, status, content_type, body, head_only=method == "HEAD")
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading
        except Exception:
            log.exception("health.request_failed")
        finally:
            await _linger(reader, writer)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _route(
        self, method: str | None, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        if method is None:
            return 400, _TEXT, f"bad request: {path}\n".encode()
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"only GET and HEAD\n"
        if path == "/metrics":
            return await self.metrics(headers.get("accept", ""))
        if path == "/livez":
            status, text = self.livez()
        elif path == "/readyz":
            status, text = await self.readyz()
        else:
            return 404, _TEXT, b"not found: try /metrics, /livez or /readyz\n"
        return status, _TEXT, text.encode()


def _parse(head: bytes) -> tuple[str | None, str, dict[str, str]]:
    """(method, path, lower-cased headers); method None and the problem as path if bad."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None, "not ASCII", {}
    request_line, *lines = text[:-4].split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        return None, "malformed request line", {}
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return None, "not HTTP/1.x", {}
    if not target.startswith("/"):
        return None, "the target must be a path", {}
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None, "malformed header", {}
        headers[name.lower()] = value.strip()
    return method, urlsplit(target).path, headers


async def _reply(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool = False,
) -> None:
    phrase = http.HTTPStatus(status).phrase
    extra = "Allow: GET, HEAD\r\n" if status == 405 else ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("ascii") + (b"" if head_only else body))
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drop what the client still sends until it closes (bounded): closing
    with unread input resets the connection, and the client could lose our answer."""
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            dropped = 0
            while dropped < MAX_HEAD_BYTES * 8 and (chunk := await reader.read(MAX_HEAD_BYTES)):
                dropped += len(chunk)


def _name(check: ReadinessCheck) -> str:
    owner = getattr(check, "__self__", None)
    name = getattr(check, "__name__", type(check).__name__)
    return f"{type(owner).__name__}.{name}" if owner is not None else str(name)


class RedisPing:
    """The readiness check every service has: Redis answers PING within `timeout_s`.

    Its own client without backoff, so the answer is prompt and says what failed (and a
    service busy on every pooled connection is not taken for a dead Redis)."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self._timeout_s = timeout_s
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),  # once: a connection Redis closed meanwhile
        )

    async def __call__(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except TimeoutError:
            return f"redis: no answer to PING within {self._timeout_s:g}s"
        except Exception as exc:
            return f"redis: {type(exc).__name__}: {exc}"
        return None

    async def aclose(self) -> None:
        await self._redis.aclose()

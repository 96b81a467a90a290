"""A small HTTP/1.1 server: h11's state machine on asyncio streams, one task per connection.

Handlers are `async (Request) -> Reply`. A reply is a whole `Response`, a `StreamResponse`
(chunked; SSE) or `Hangup` (close without answering). While a reply is being produced the
connection keeps reading, so a client that gives up (a timeout) cancels its handler at once
instead of leaving a sleeping task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import structlog

log = structlog.get_logger("swarm.simulator.http")

READ_SIZE = 65_536
SERVER_NAME = "swarmbus-simulator"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class StreamResponse:
    chunks: AsyncIterator[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Hangup:
    """Close the connection without a response (a dead upstream)."""


Reply = Response | StreamResponse | Hangup


class Refusal(Exception):
    """Raised by a handler to answer with an error response at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[[Request], Awaitable[Reply]]


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, dict(headers or {}))


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Overloaded" if status == 529 else b""


class _Closed(Exception):
    """The peer went away; stop serving this connection."""


class _Connection:
    def __init__(
        self,
        server: HttpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER)
        self.idle = True  # between requests: safe to close at shutdown
        self._pending_read: asyncio.Task[bytes] | None = None

    async def serve(self) -> None:
        try:
            while True:
                request = await self._read_request()
                if request is None or not await self._answer(request):
                    return
                if h11.MUST_CLOSE in (self.h11.our_state, self.h11.their_state):
                    return
                self.h11.start_next_cycle()
        except _Closed:
            return
        except h11.RemoteProtocolError as exc:
            await self._bad_request(exc)
        except (ConnectionError, h11.LocalProtocolError):
            return
        finally:
            await self._close()

    # -- reading

    async def _recv(self) -> bytes:
        # A read may already be pending from the disconnect watch in `_answer`.
        if self._pending_read is None:
            self._pending_read = asyncio.ensure_future(self.reader.read(READ_SIZE))
        try:
            return await self._pending_read
        except OSError:
            return b""
        finally:
            self._pending_read = None

    async def _read_request(self) -> Request | None:
        self.idle = True
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.h11.they_are_waiting_for_100_continue:
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                self.h11.receive_data(await self._recv())
                continue
            if isinstance(event, h11.Request):
                self.idle = False
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.server.max_body_bytes:
                    await self._send_whole(json_response(413, {"error": "body too large"}))
                    raise _Closed
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return _make_request(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    # -- answering

    async def _answer(self, request: Request) -> bool:
        """Produce and send the reply; True if the connection may serve another request."""
        producing = asyncio.create_task(self._produce(request))
        try:
            return await self._watch(producing)
        finally:
            if not producing.done():  # our own task was cancelled (server stop)
                producing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producing

    async def _watch(self, producing: asyncio.Task[bool]) -> bool:
        watching = True
        while watching:
            if self._pending_read is None:
                self._pending_read = asyncio.ensure_future(self.reader.read(READ_SIZE))
            done, _ = await asyncio.wait(
                {producing, self._pending_read}, return_when=asyncio.FIRST_COMPLETED
            )
            if producing in done:
                break
            try:
                data = self._pending_read.result()
            except OSError:
                data = b""
            self._pending_read = None
            if not data:  # the client gave up: stop sleeping on its behalf
                producing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producing
                return False
            # Pipelined bytes: h11 keeps them for the next cycle; stop watching.
            self.h11.receive_data(data)
            watching = False
        return await producing

    async def _produce(self, request: Request) -> bool:
        try:
            reply = await self.server.handler(request)
        except Refusal as refusal:
            reply = refusal.response
        except Exception:
            log.exception("simulator.handler_failed", method=request.method, path=request.path)
            reply = json_response(500, {"error": {"message": "simulator handler failed"}})
        if isinstance(reply, Hangup):
            return False
        if isinstance(reply, Response):
            await self._send_whole(reply)
            return True
        return await self._send_stream(reply)

    async def _send_whole(self, reply: Response) -> None:
        headers = [
            *reply.headers.items(),
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("server", SERVER_NAME),
        ]
        await self._send(
            h11.Response(status_code=reply.status, headers=headers, reason=_reason(reply.status)),
            h11.Data(data=reply.body),
            h11.EndOfMessage(),
        )

    async def _send_stream(self, reply: StreamResponse) -> bool:
        headers = [
            *reply.headers.items(),
            ("content-type", reply.content_type),
            ("cache-control", "no-cache"),
            ("server", SERVER_NAME),
        ]
        await self._send(
            h11.Response(status_code=reply.status, headers=headers, reason=_reason(reply.status))
        )
        try:
            async for chunk in reply.chunks:
                await self._send(h11.Data(data=chunk))
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            # The status line is gone; all we can do is cut the stream short.
            log.exception("simulator.stream_failed")
            return False
        await self._send(h11.EndOfMessage())
        return True

    async def _send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def _bad_request(self, exc: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": {"message": f"bad request: {exc}"}}).encode()
        status = exc.error_status_hint
        with contextlib.suppress(Exception):
            await self._send(
                h11.Response(
                    status_code=status,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                    ],
                    reason=_reason(status),
                ),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )

    async def _close(self) -> None:
        if self._pending_read is not None:
            self._pending_read.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pending_read
            self._pending_read = None
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def _make_request(head: h11.Request, body: bytes) -> Request:
    target = head.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in head.headers:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    return Request(
        method=head.method.decode("ascii"),
        path=unquote(parts.path),
        query=parse_qs(parts.query),
        headers=headers,
        body=body,
    )


class HttpServer:
    """Listen on host:port and serve `handler`; `stop()` closes every connection."""

    def __init__(self, handler: Handler, *, max_body_bytes: int = 64 * 1024 * 1024) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self.accepted = 0  # connections ever accepted: keep-alive shows as few

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self, host: str, port: int) -> None:
        # A deep backlog: thousands of clients may connect in the same instant.
        self._server = await asyncio.start_server(
            self._on_connect, host, port, backlog=4096, limit=READ_SIZE
        )

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task, not the one asyncio makes for a coroutine callback: Python 3.11
        # logs an error when that one ends cancelled, which is how `stop()` ends it.
        self.accepted += 1
        conn = _Connection(self, reader, writer)
        task = asyncio.create_task(conn.serve())
        self._connections[task] = conn
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._connections.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("simulator.connection_failed", exc_info=exc)

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop listening, close idle keep-alive connections, give busy ones `grace_s`."""
        if self._server is None:
            return
        self._server.close()
        for task, conn in list(self._connections.items()):
            if conn.idle:
                task.cancel()
        busy = set(self._connections)
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

"""The console's ASGI app (Starlette): pages, live updates, actions, health.

    GET  /  /tasks  /task/{id}  /records/{dlq|rejected}    pages (paged: ?before=ENTRY_ID)
    GET  /events?view=overview | /events?view=task&id=ID    server-sent events: sections
    POST /api/tasks/{id}/cancel                             needs the token
    POST /api/records/{dlq|rejected}/{record id}/replay     needs the token
    GET  /metrics  /livez  /readyz                          as every service serves them

One refresher (`Hub`) reads the overview every `refresh_s` and every open overview page
gets its sections from it, so ten open tabs cost Redis what one does. The token travels in
an `Authorization: Bearer` header sent by the page's script (never a cookie, so another
site cannot make a browser send it), is compared in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlencode

import structlog
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.console import data, views
from services.console.actions import Actions, Outcome
from services.console.settings import ConsoleSettings
from services.console.window import CostWindow
from shared.protocol import Names
from shared.runtime.logging import register_secret, scrub_text
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings, SwarmSettings

log = structlog.get_logger("swarm.console")

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
RECORD_STREAMS = ("dlq", "rejected")


class Hub:
    """The overview's sections, refreshed every `refresh_s`; waiters learn of changes."""

    def __init__(self, redis: Redis, names: Names, settings: ConsoleSettings) -> None:
        self._redis, self._names, self._s = redis, names, settings
        self.window = CostWindow(names.findings, window_s=settings.window_s)
        self.sections: dict[str, str] = {}
        self.version = 0
        self.watchers = 0  # open overview streams: with none, the hub reads nothing
        self._fresh_at = float("-inf")  # when `sections` were last read (monotonic)
        self._changed = asyncio.Condition()

    async def refresh(self) -> None:
        r, n = self._redis, self._names
        self._fresh_at = time.monotonic()
        try:
            live = await data.members(r, n)
            streams = await data.stream_rows(r, await data.stream_names(r, n, live))
            await self.window.refresh(r)
            tasks = await data.task_page(r, n, before=None, size=self._s.page_size)
        except RedisError as exc:
            await self._publish({**self.sections, "redis-error": h_error(exc)})
            return
        length = {s.stream: s.length for s in streams}
        await self._publish(
            {
                "redis-error": "",
                "fleet": views.fleet_section(data.fleet_rows(live)),
                "streams": views.streams_section(streams),
                "cost": views.cost_section(
                    self.window.rows(),
                    caught_up=self.window.caught_up,
                    window_s=self._s.window_s,
                ),
                "counts": views.counts_section(
                    length.get(n.dead_letter, 0), length.get(n.rejected, 0)
                ),
                "tasks": views.tasks_section(tasks, before=None),
            }
        )

    async def _publish(self, sections: dict[str, str]) -> None:
        if sections == self.sections:
            return
        async with self._changed:
            self.sections = sections
            self.version += 1
            self._changed.notify_all()

    async def run(self) -> None:
        """Refresh every `refresh_s` while a page watches (a console nobody looks at costs
        Redis nothing)."""
        while True:
            if self.watchers:
                try:
                    await self.refresh()
                except Exception:  # a bug in one refresh must not end the live updates
                    log.exception("console.refresh_failed")
            await asyncio.sleep(self._s.refresh_s)

    async def current(self) -> dict[str, str]:
        """The sections, read again first when older than one refresh."""
        if time.monotonic() - self._fresh_at >= self._s.refresh_s:
            await self.refresh()
        return self.sections

    async def newer(self, version: int, timeout_s: float) -> bool:
        """Wait until the sections are newer than `version`; False on timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > version), timeout_s
                )
            return self.version > version


def h_error(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return views.h(f"Redis: {scrub_text(first)} (showing the last data read)")


def _sse(sections: dict[str, str]) -> str:
    return f"data: {json.dumps({'sections': sections})}\n\n"


class Console:
    """The handlers, around one Redis client and one `Hub` (both made by the lifespan)."""

    def __init__(
        self,
        swarm: SwarmSettings,
        bus: BusSettings,
        settings: ConsoleSettings,
        actions: Actions,
    ) -> None:
        self.swarm, self.bus, self.s, self.actions = swarm, bus, settings, actions
        self.names = swarm.names
        self._token = settings.token.get_secret_value() if settings.token else None
        register_secret(self._token)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._redis: Redis | None = None
        self._hub: Hub | None = None

    @property
    def redis(self) -> Redis:
        assert self._redis is not None, "the lifespan connects"
        return self._redis

    @property
    def hub(self) -> Hub:
        assert self._hub is not None, "the lifespan starts it"
        return self._hub

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._redis = connect(self.swarm.redis_url.get_secret_value(), self.bus)
        self._hub = Hub(self._redis, self.names, self.s)
        refresher = asyncio.create_task(self._hub.run(), name="console-refresh")
        log.info(
            "console.started",
            url=f"http://{self.s.host}:{self.s.port}",
            redis=self.swarm.redis_url_redacted,
            namespace=self.names.namespace,
            read_only=self.s.read_only,
        )
        try:
            yield
        finally:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            await self._redis.aclose()
            log.info("console.stopped")

    def render(self, title: str, body: str, events: str | None = None) -> HTMLResponse:
        return HTMLResponse(
            views.page(
                title,
                body,
                namespace=self.names.namespace,
                read_only=self.s.read_only,
                events=events,
            )
        )

    # -- pages -------------------------------------------------------------------------------

    async def overview(self, _request: Request) -> Response:
        s = await self.hub.current()

        def sec(key: str, title: str) -> str:
            return f'<section><h2>{title}</h2><div id="{key}">{s.get(key, "")}</div></section>'

        body = (
            f'<p id="redis-error" class="error">{s.get("redis-error", "")}</p>'
            f'<p id="counts" class="counts">{s.get("counts", "")}</p>'
            + sec("fleet", "Fleet")
            + sec("streams", "Streams and backlog")
            + sec("cost", "Cost and tokens, last hour")
            + sec("tasks", "Recent tasks")
        )
        return self.render("Overview", body, "/events?view=overview")

    async def tasks(self, request: Request) -> Response:
        before = request.query_params.get("before") or None
        try:
            p = await data.task_page(self.redis, self.names, before=before, size=self.s.page_size)
        except RedisError as exc:
            return self.render("Tasks", f'<p class="error">{h_error(exc)}</p>')
        section = views.tasks_section(p, before=before)
        body = f'<h2>Tasks, newest first</h2><div id="tasks">{section}</div>'
        return self.render("Tasks", body, None if before else "/events?view=overview")

    async def task_body(self, task_id: str) -> str:
        try:
            t = await data.task_detail(self.redis, self.names, task_id)
        except RedisError as exc:
            return f'<p class="error">{h_error(exc)}</p>'
        return views.task_section(t, read_only=self.s.read_only)

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        body = (
            f'<h2>Task {views.h(task_id)}</h2><div id="task">{await self.task_body(task_id)}</div>'
        )
        events = "/events?" + urlencode({"view": "task", "id": task_id})
        return self.render(f"Task {task_id}", body, events)

    async def find(self, request: Request) -> Response:
        task_id = request.query_params.get("task_id", "").strip()
        if not task_id:
            return RedirectResponse("/tasks", 303)
        return RedirectResponse("/task/" + quote(task_id, safe=""), 303)

    async def records(self, request: Request) -> Response:
        which = request.path_params["which"]
        if which not in RECORD_STREAMS:
            return PlainTextResponse("not found: /records/dlq or /records/rejected", 404)
        before = request.query_params.get("before") or None
        stream = self.names.dead_letter if which == "dlq" else self.names.rejected
        title = "Dead letters" if which == "dlq" else "Rejected tasks"
        try:
            total, p = await data.record_page(
                self.redis, stream, before=before, size=self.s.page_size
            )
        except RedisError as exc:
            return self.render(title, f'<p class="error">{h_error(exc)}</p>')
        section = views.records_section(which, total, p, before=before, read_only=self.s.read_only)
        heading = f"<h2>{title} ({views.h(stream)})</h2>"
        return self.render(title, f'{heading}<div id="records">{section}</div>')

    # -- live ----------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        if request.query_params.get("view") == "task":
            stream = self._task_stream(request.query_params.get("id", ""))
        else:
            stream = self._overview_stream()
        return StreamingResponse(stream, media_type="text/event-stream")

    async def _overview_stream(self) -> AsyncIterator[str]:
        version = -1
        self.hub.watchers += 1
        try:
            while True:
                if await self.hub.newer(version, KEEPALIVE_S):
                    version = self.hub.version
                    yield _sse(self.hub.sections)
                else:
                    yield ": keepalive\n\n"
        finally:
            self.hub.watchers -= 1

    async def _task_stream(self, task_id: str) -> AsyncIterator[str]:
        last, quiet = None, 0.0
        while True:
            section = await self.task_body(task_id)
            if section != last:
                last, quiet = section, 0.0
                yield _sse({"task": section})
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(self.s.refresh_s)
            quiet += self.s.refresh_s

    # -- actions -------------------------------------------------------------------------------

    def refused(self, request: Request, what: str) -> JSONResponse | None:
        if self._token is None:
            return JSONResponse(
                {"ok": False, "message": f"Refused: this console is read-only (no "
                 f"SWARM_CONSOLE_TOKEN is set), so it cannot {what}."},
                403,
            )  # fmt: skip
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not given:
            return JSONResponse(
                {"ok": False, "message": f"Refused: enter the console token to {what}."}, 401
            )
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            return JSONResponse({"ok": False, "message": "Refused: wrong console token."}, 401)
        return None

    async def act(
        self, request: Request, what: str, run: Callable[[], Awaitable[Outcome]], **about: str
    ) -> Response:
        denied = self.refused(request, what)
        if denied is not None:
            log.warning("console.refused", action=what, status=denied.status_code, **about)
            return denied
        outcome = await run()
        log.info("console.action", action=what, ok=outcome.ok, message=outcome.message, **about)
        body = {"ok": outcome.ok, "message": outcome.message}
        return JSONResponse(body, 200 if outcome.ok else 409)

    async def cancel(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        return await self.act(
            request, "cancel", lambda: self.actions.cancel(task_id), task_id=task_id
        )

    async def replay(self, request: Request) -> Response:
        which, record = request.path_params["which"], request.path_params["record"]
        if which not in RECORD_STREAMS:
            return JSONResponse({"ok": False, "message": f"no record stream {which!r}"}, 404)
        return await self.act(
            request,
            "replay",
            lambda: self.actions.replay(which, record),
            stream=which,
            record=record,
        )

    # -- health --------------------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.registry), media_type=content_type)

    async def livez(self, _request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, _request: Request) -> Response:
        try:
            async with asyncio.timeout(2.0):
                await self.redis.ping()
        except (RedisError, TimeoutError) as exc:
            reason = scrub_text(str(exc) or type(exc).__name__)
            return PlainTextResponse(f"redis: {reason}\n", 503)
        return PlainTextResponse("ok\n")


def create_app(
    swarm: SwarmSettings,
    bus: BusSettings,
    settings: ConsoleSettings,
    *,
    actions: Actions | None = None,
) -> Starlette:
    c = Console(
        swarm, bus, settings, actions or Actions(swarm, timeout_s=settings.action_timeout_s)
    )
    return Starlette(
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=settings.hosts)],
        routes=[
            Route("/", c.overview),
            Route("/tasks", c.tasks),
            Route("/task/{task_id:path}", c.task),
            Route("/find", c.find),
            Route("/records/{which}", c.records),
            Route("/events", c.events),
            Route("/api/tasks/{task_id:path}/cancel", c.cancel, methods=["POST"]),
            Route("/api/records/{which}/{record}/replay", c.replay, methods=["POST"]),
            Route("/metrics", c.metrics),
            Route("/livez", c.livez),
            Route("/readyz", c.readyz),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=c.lifespan,
    )

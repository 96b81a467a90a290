"""`Simulator`: one HTTP server for every vendor, each under its own path prefix
(`BASE_PATHS`); use it as `async with Simulator(config) as sim:` and `sim.base_url`."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from services.simulator.anthropic import AnthropicAPI
from services.simulator.config import SimulatorConfig
from services.simulator.context import SimContext
from services.simulator.gemini import GeminiAPI
from services.simulator.http import (
    Hangup,
    HttpServer,
    Refusal,
    Reply,
    Request,
    Response,
    json_response,
)
from services.simulator.openai import OpenAIAPI
from services.simulator.stats import Call

# The SDK base URL of each vendor, relative to the simulator's root.
BASE_PATHS = {
    "anthropic": "/anthropic",
    "openai": "/openai/v1",
    "deepseek": "/deepseek/v1",
    "compat": "/compat/v1",
    "gemini": "/gemini",
}


class _VendorAPI(Protocol):
    async def handle(self, request: Request, path: str, call: Call) -> Reply: ...


class Simulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._ctx: SimContext | None = None
        self._apis: dict[str, _VendorAPI] = {}
        self._http: HttpServer | None = None
        self._host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._http is not None:
            raise RuntimeError("simulator already started")
        ctx = SimContext(self.config)
        self._ctx = ctx
        self._apis = {
            "anthropic": AnthropicAPI(ctx),
            "openai": OpenAIAPI(ctx, "openai"),
            "deepseek": OpenAIAPI(ctx, "deepseek"),
            "compat": OpenAIAPI(ctx, "compat"),
            "gemini": GeminiAPI(ctx),
        }
        http = HttpServer(self._handle, max_body_bytes=self.config.max_body_bytes)
        await http.start(host, port)
        self._http = http
        self._host = host

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop listening; requests still running after `grace_s` are cut off."""
        if self._http is not None:
            await self._http.stop(grace_s)
            self._http = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("simulator is not running")
        return self._http.port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def vendor_urls(self) -> dict[str, str]:
        """SDK base URL of every vendor (OpenAI-style ones end in /v1, as the SDK wants)."""
        return {vendor: self.base_url + path for vendor, path in BASE_PATHS.items()}

    def stats(self) -> dict[str, object]:
        """Request counts (total, in flight, by vendor / model / status, injected faults)
        and connection counts."""
        if self._ctx is None:
            return {}
        out = self._ctx.stats.snapshot()
        if self._http is not None:
            out["connections"] = {
                "open": self._http.open_connections,
                "accepted": self._http.accepted,
            }
        return out

    def reset(self) -> None:
        if self._ctx is not None:
            self._ctx.reset()

    # -- routing

    async def _handle(self, request: Request) -> Reply:
        if request.path.startswith("/_sim/"):
            return self._control(request)
        if request.path in ("/livez", "/readyz") and request.method == "GET":
            # The probe paths every swarm image answers (it needs no Redis: always ready).
            return Response(200, b"ok\n", content_type="text/plain; charset=utf-8")
        ctx = self._ctx
        assert ctx is not None
        vendor, _, rest = request.path.lstrip("/").partition("/")
        api = self._apis.get(vendor)
        if api is None:
            return json_response(
                404,
                {"error": {"message": f"no vendor at {request.path}", "vendors": list(BASE_PATHS)}},
            )
        call = Call(vendor)
        status = "client_closed"  # if the client leaves before we answer
        ctx.stats.in_flight += 1
        try:
            try:
                reply = await api.handle(request, "/" + rest, call)
            except Refusal as refusal:
                reply = refusal.response
            status = _status(reply)
            return reply
        finally:
            ctx.stats.in_flight -= 1
            ctx.stats.record(call, status)

    def _control(self, request: Request) -> Response:
        if request.path == "/_sim/health" and request.method == "GET":
            return json_response(200, {"ok": True})
        if request.path == "/_sim/stats" and request.method == "GET":
            return json_response(200, self.stats())
        if request.path == "/_sim/reset" and request.method == "POST":
            self.reset()
            return json_response(200, {"ok": True})
        return json_response(404, {"error": {"message": f"unknown control path {request.path}"}})


def _status(reply: Reply) -> str:
    return "hangup" if isinstance(reply, Hangup) else str(reply.status)

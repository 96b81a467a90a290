"""The console under uvicorn: it handles SIGINT and SIGTERM itself (stop accepting, let
requests finish for a moment, close the live streams), then the app's lifespan closes Redis."""

from __future__ import annotations

import uvicorn

from services.console.app import create_app
from services.console.settings import ConsoleSettings
from shared.runtime.settings import BusSettings, SwarmSettings

GRACE_S = 3  # open live streams never end by themselves: they are closed after this


async def serve(swarm: SwarmSettings, bus: BusSettings, settings: ConsoleSettings) -> int:
    config = uvicorn.Config(
        create_app(swarm, bus, settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's loggers go through the swarm's structlog setup
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE_S,
        server_header=False,
    )
    server = uvicorn.Server(config)
    await server.serve()
    return 0 if server.started else 1

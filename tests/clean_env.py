"""The environment for a `swarm` subprocess that must see only the configuration its test
gives it: nothing that configures the swarm or a vendor (keys, base URLs) is passed on."""

from __future__ import annotations

import os

from shared.runtime.net import free_port

_CONTROLLED_PREFIXES = ("SWARM_", "LOG_", "FINDINGS_", "REDIS_", "METRICS_", "CONSUMER_")
_CONTROLLED_SUFFIXES = ("_API_KEY", "_BASE_URL")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus the swarm's and the vendors' variables, with Redis
    pointed at a closed port and a 2 s connect timeout (a process that should have stopped
    at its configuration exits in seconds instead of hanging), metrics off, JSON logs;
    then `extra`. Run the process in a temp dir too: settings read `.env` from there."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_CONTROLLED_PREFIXES) and not k.endswith(_CONTROLLED_SUFFIXES)
    }
    return {
        **env,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nobody listens there
        "SWARM_CONNECT_TIMEOUT_S": "2",
        "METRICS_PORT": "0",
        "LOG_JSON": "1",
        "LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }

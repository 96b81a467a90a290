"""Find a Redis for commands that should just work: REDIS_URL, else a local one on 6379,
else a private `redis-server` started from PATH in a temp dir (stopped on exit)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from shared.runtime.net import free_port
from shared.runtime.settings import redact_url

LOCAL_URL = "redis://127.0.0.1:6379/0"
INSTALL_HINT = (
    "no Redis found: set REDIS_URL, start one on 127.0.0.1:6379, or install redis-server "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis; "
    "Docker: docker run -p 6379:6379 redis:7)"
)


def answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


@contextlib.contextmanager
def private_redis_server(
    *,
    port: int | None = None,
    appendonly: bool = False,
    workdir: str | None = None,
    config: str | None = None,
    probe_url: str | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `redis-server` on a loopback port; yield (url, process); stop it after.

    `config` is redis.conf text (ACL `user` lines must come from a file, not flags);
    `probe_url` is how to reach it when the default user cannot (`{port}` is filled in).
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(INSTALL_HINT)
    port = port or free_port()
    owned = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="swarm-redis-")
    conf: list[str] = []
    if config is not None:
        path = os.path.join(workdir, "redis.conf")
        with open(path, "w") as fh:
            fh.write(config)
        conf = [path]
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary lookup
        [
            exe,
            *conf,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            workdir,
            "--appendonly",
            "yes" if appendonly else "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = (probe_url or "redis://127.0.0.1:{port}/0").format(port=port)
    try:
        deadline = time.monotonic() + 10
        while not answers(url, 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def docker_redis() -> Iterator[str]:
    """A throwaway `redis:7` container on a loopback port, removed on exit."""
    docker = shutil.which("docker") or "docker"
    port = free_port()
    name = f"swarmbus-redis-{port}"
    subprocess.run(  # noqa: S603 - fixed argv
        [
            docker,
            "run",
            "--rm",
            "-d",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:6379",
            "redis:7.4.5-alpine",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 30
        while not answers(url, 0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the redis container did not answer within 30s")
            time.sleep(0.2)
        yield url
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, check=False)  # noqa: S603


def _docker_works() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=20)  # noqa: S603
    return probe.returncode == 0


@contextlib.contextmanager
def find_redis(env_url: str | None) -> Iterator[str]:
    if env_url:
        if not answers(env_url, 2.0):
            raise RuntimeError(f"REDIS_URL {redact_url(env_url)} does not answer")
        yield env_url
    elif answers(LOCAL_URL):
        yield LOCAL_URL
    elif shutil.which("redis-server"):
        with private_redis_server() as (url, _proc):
            print(f"started a private redis-server at {url} (stopped on exit)")
            yield url
    elif _docker_works():
        with docker_redis() as url:
            print(f"started a redis container at {url} (removed on exit)")
            yield url
    else:
        raise RuntimeError(INSTALL_HINT)

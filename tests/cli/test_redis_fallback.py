"""`make test` on a machine whose Docker engine answers but cannot start the Redis test
container (no registry to pull the image from): tests/conftest.py falls back to a private
`redis-server`, with one warning that says why, instead of an error per test.

The engine is a fake on a unix socket of this test (DOCKER_HOST): it answers the ping and
the version, and refuses everything else as an engine without a registry does, so this runs
the same with or without a real engine, and no request leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE_TEST = """
import redis


def test_redis_answers(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
    finally:
        client.close()
    print("REDIS_URL_USED", redis_url)
"""


class _FakeEngine(BaseHTTPRequestHandler):
    """Ping and version answer; pulls and creates fail as with no registry reachable."""

    requests: list[str]  # set per server, below

    def _reply(self, status: int, body: dict[str, object] | str) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        if path.endswith("/_ping"):
            self._reply(200, "OK")
        elif path.endswith("/version"):
            self._reply(200, {"ApiVersion": "1.41", "Version": "20.10.24", "Os": "linux"})
        else:
            self._reply(500, {"message": "fake engine: no registry is reachable"})

    do_GET = do_POST = do_DELETE = do_HEAD = _handle

    def address_string(self) -> str:  # a unix socket's peer has no address
        return "fake-engine-client"

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def fake_engine() -> Iterator[tuple[str, list[str]]]:
    folder = tempfile.mkdtemp(prefix="fake-docker-")  # short: unix socket paths are limited
    sock = os.path.join(folder, "docker.sock")
    seen: list[str] = []
    handler = type("Handler", (_FakeEngine,), {"requests": seen})
    server = socketserver.ThreadingUnixStreamServer(sock, handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{sock}", seen
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_tests_fall_back_to_a_private_redis_server_when_the_container_cannot_start(
    fake_engine: tuple[str, list[str]], tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH: there is nothing to fall back to")
    docker_host, seen = fake_engine
    (tmp_path / "test_probe.py").write_text(PROBE_TEST)
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "REDIS_URL" and not k.startswith(("DOCKER_", "TESTCONTAINERS_", "TC_"))
    }
    env["DOCKER_HOST"] = docker_host
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),  # the suite's settings: warnings are errors
            "--rootdir",
            str(ROOT),
            "-p",
            "tests.conftest",  # the fixture under test
            "-p",
            "no:cacheprovider",
            "-s",
            "-q",
            str(tmp_path / "test_probe.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "1 passed, 1 warning" in out, out[-4000:]
    assert out.count("no Redis container for the tests") == 1, out[-4000:]
    assert "using a private redis-server instead" in out
    assert "no registry is reachable" in out  # the warning says why
    assert "REDIS_URL_USED redis://127.0.0.1:" in out  # the private server on loopback
    assert any(r.endswith("/_ping") for r in seen)  # the engine was asked, and ...
    assert any(not r.endswith(("/_ping", "/version")) for r in seen), seen  # ... refused

"""Append-only copies of the findings, so they outlive Redis.

Each is written before the finding is stored in Redis and before its ack:

* `JsonlExport`: one line per finding, the finding as JSON (it decodes back with
  `Finding.model_validate_json`), flushed at once. At-least-once: a finding redelivered
  after a crash between this write and the Redis write is appended a second time, so
  readers dedupe on each line's `finding_id`.
* `PostgresExport` (with `FINDINGS_DATABASE_URL`; needs the `postgres` extra): a row per
  finding in a table created if missing, `INSERT ... ON CONFLICT (finding_id) DO NOTHING`,
  so the table holds each finding exactly once.

Each sink is also a readiness check of the collector (`check`: None when fine, else a
short reason for `/readyz`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from services.collector.settings import CollectorSettings
from shared.protocol import Finding

if TYPE_CHECKING:
    from psycopg import AsyncConnection, sql


class Sink(Protocol):
    async def write(self, finding: Finding) -> None: ...

    async def check(self) -> str | None: ...


_CHECK_TIMEOUT_S = 1.0


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class JsonlExport:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8", newline="\n")
        self._failed: str | None = None  # the last write's error, until one succeeds

    async def write(self, finding: Finding) -> None:
        # One write call per line from the event loop's thread: lines never interleave.
        try:
            self._file.write(finding.model_dump_json(exclude_none=True) + "\n")
            self._file.flush()
        except OSError as exc:
            self._failed = _error(exc)
            raise
        self._failed = None

    async def check(self) -> str | None:
        """Fine while the file we append to is still at its path, writable, and the last
        write did not fail (a full disk shows there)."""
        name = f"export {self.path}"
        if self._failed is not None:
            return f"{name}: the last write failed: {self._failed}"
        try:
            at_path = os.stat(self.path)
        except OSError as exc:
            return f"{name}: {_error(exc)} (moved or deleted: findings go to an unlinked file)"
        mine = os.fstat(self._file.fileno())
        if (at_path.st_dev, at_path.st_ino) != (mine.st_dev, mine.st_ino):
            return f"{name}: replaced by another file since it was opened"
        if not os.access(self.path, os.W_OK):
            return f"{name}: not writable"
        return None

    def close(self) -> None:
        self._file.close()


_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    finding_id text PRIMARY KEY,
    task_id text NOT NULL,
    run_id text,
    task_type text NOT NULL,
    status text NOT NULL,
    vendor text NOT NULL,
    model text NOT NULL,
    worker_id text NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    cost_usd double precision,  -- NULL: the model is unpriced, never $0
    latency_ms double precision NOT NULL,
    attempt integer NOT NULL,
    found_at timestamptz NOT NULL,
    collected_at timestamptz NOT NULL DEFAULT now(),
    finding jsonb NOT NULL
)
"""
_INSERT = """
INSERT INTO {table} (
    finding_id, task_id, run_id, task_type, status, vendor, model, worker_id,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
    latency_ms, attempt, found_at, finding
) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (finding_id) DO NOTHING
"""


class PostgresExport:
    """One connection, used by one insert at a time; reopened after it breaks (the failed
    finding is not acked, so it comes back and is inserted then)."""

    def __init__(self, url: str, table: str) -> None:
        self._url, self._table = url, table
        self._conn: AsyncConnection[tuple[object, ...]] | None = None
        self._insert: sql.Composed | None = None
        self._lock = asyncio.Lock()
        self._failed: str | None = None  # the last insert's error, until one succeeds

    async def open(self) -> None:
        try:
            from psycopg import errors, sql  # noqa: PLC0415  (the optional `postgres` extra)
        except ImportError:
            raise RuntimeError(
                "FINDINGS_DATABASE_URL is set but psycopg is not installed: "
                "pip install 'swarmbus[postgres]'"
            ) from None
        table = sql.Identifier(*self._table.split("."))
        self._insert = sql.SQL(_INSERT).format(table=table)
        conn = await self._connection()
        with contextlib.suppress(errors.UniqueViolation):  # a peer created it just now
            await conn.execute(sql.SQL(_CREATE).format(table=table))

    async def write(self, finding: Finding) -> None:
        assert self._insert is not None, "open() first"
        row = (
            finding.finding_id,
            finding.task_id,
            finding.run_id,
            finding.task_type,
            finding.status.value,
            finding.vendor,
            finding.model,
            finding.worker_id,
            finding.input_tokens,
            finding.output_tokens,
            finding.cache_read_tokens,
            finding.cache_write_tokens,
            finding.cost_usd,
            finding.latency_ms,
            finding.attempt,
            finding.timestamp,
            finding.model_dump_json(exclude_none=True),
        )
        async with self._lock:
            conn = await self._connection()
            try:
                await conn.execute(self._insert, row)
            except BaseException as exc:
                self._failed = _error(exc)
                if conn.broken or conn.closed:
                    self._conn = None
                raise
            self._failed = None

    async def check(self) -> str | None:
        """Fine when the connection answers `SELECT 1` within a second (reconnecting if it
        broke), or, while inserts keep it busy, when the last insert succeeded."""
        if self._lock.locked():
            return None if self._failed is None else f"postgres: {self._failed}"
        async with self._lock:
            try:
                async with asyncio.timeout(_CHECK_TIMEOUT_S):
                    conn = await self._connection()
                    await conn.execute("SELECT 1")
            except TimeoutError:
                await self._drop()  # cut short mid-command: its state is unknown
                return f"postgres: no answer within {_CHECK_TIMEOUT_S:g}s"
            except Exception as exc:
                await self._drop()
                return f"postgres: {_error(exc)}"
        return None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> AsyncConnection[tuple[object, ...]]:
        from psycopg import AsyncConnection  # noqa: PLC0415

        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(self._url, autocommit=True)
        return self._conn


@asynccontextmanager
async def open_exports(settings: CollectorSettings) -> AsyncIterator[list[Sink]]:
    """The sinks the settings ask for, in write order (file first, then the database)."""
    sinks: list[Sink] = []
    async with AsyncExitStack() as stack:
        if settings.export_path:
            jsonl = JsonlExport(Path(settings.export_path))
            stack.callback(jsonl.close)
            sinks.append(jsonl)
        if settings.database_url is not None:
            pg = PostgresExport(settings.database_url.get_secret_value(), settings.database_table)
            stack.push_async_callback(pg.aclose)
            await pg.open()
            sinks.append(pg)
        yield sinks

"""The PostgreSQL export: each finding is one row, however often it is delivered or written.

Uses FINDINGS_TEST_DATABASE_URL, else the local server (postgresql://postgres@127.0.0.1:5432/
test, trust auth); each test works in a schema of its own, dropped afterwards. Skipped only
when nothing answers on that address.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from psycopg import AsyncConnection, sql
from redis.asyncio import Redis

from services.collector.export import PostgresExport
from shared.bus.findings import task_view
from shared.protocol import Finding, Names
from shared.runtime.net import free_port
from tests.collector.conftest import StartCollector, make_finding, publish, wait_handled
from tests.waiting import eventually

PG_URL = os.environ.get("FINDINGS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


@pytest.fixture
async def table() -> AsyncIterator[str]:
    if not _answers(PG_URL):
        pytest.skip(f"no PostgreSQL answers at {urlsplit(PG_URL).netloc}")
    schema = f"collector_{uuid.uuid4().hex[:12]}"
    async with await AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield f"{schema}.findings"
    finally:
        async with await AsyncConnection.connect(PG_URL, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def _rows(table: str) -> list[tuple[str, str, float | None, object]]:
    schema, name = table.split(".")
    query = sql.SQL("SELECT finding_id, status, cost_usd, finding FROM {} ORDER BY finding_id")
    async with await AsyncConnection.connect(PG_URL) as conn:
        cur = await conn.execute(query.format(sql.Identifier(schema, name)))
        return list(await cur.fetchall())


def _decode(doc: object) -> Finding:
    return Finding.model_validate_json(doc if isinstance(doc, str) else json.dumps(doc))


async def test_the_collector_writes_each_finding_once_to_postgres(
    redis: Redis, names: Names, start_collector: StartCollector, table: str
) -> None:
    collector = await start_collector(FINDINGS_DATABASE_URL=PG_URL, database_table=table)
    findings = [make_finding(task_id=f"pg-{i}") for i in range(8)]
    findings.append(make_finding(task_id="pg-0", vendor="claude", model="claude-x"))  # dup work
    findings.append(make_finding(task_id="pg-9", cost_usd=None, model="local-x"))
    findings.append(make_finding(task_id="pg-10", status="failed", error="quota"))
    await publish(redis, names, *findings)
    await publish(redis, names, *findings[:4])  # published again
    await wait_handled(redis, names)

    rows = await _rows(table)
    by_id = {f.finding_id: f for f in findings}
    assert sorted(r[0] for r in rows) == sorted(by_id)
    for finding_id, status, cost, doc in rows:
        f = by_id[finding_id]
        assert _decode(doc) == f
        assert status == f.status.value
        assert cost == f.cost_usd  # NULL for the unpriced model, never 0
    assert {f.finding_id for f in collector.export_lines()} == set(by_id)
    view = await task_view(redis, names, "pg-0")
    assert view is not None and len(view.findings) == 2


async def test_writing_the_same_finding_again_adds_no_row(table: str) -> None:
    # What a redelivery after a crash between the database write and the ack does.
    f = make_finding()
    first, second = PostgresExport(PG_URL, table), PostgresExport(PG_URL, table)
    await first.open()
    await second.open()  # the table exists already: opening again is harmless
    try:
        await first.write(f)
        await first.write(f)
        await second.write(f)
    finally:
        await first.aclose()
        await second.aclose()
    rows = await _rows(table)
    assert [r[0] for r in rows] == [f.finding_id]


async def test_the_export_is_a_readiness_check_that_reconnects(table: str) -> None:
    export = PostgresExport(PG_URL, table)
    await export.open()
    try:
        assert await export.check() is None
        conn = export._conn
        assert conn is not None
        async with await AsyncConnection.connect(PG_URL, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

        async def ready_again() -> bool:
            return await export.check() is None

        await eventually(ready_again, timeout=10, what="the export to reconnect")
        await export.write(make_finding())  # and it writes again
    finally:
        await export.aclose()


async def test_an_unreachable_database_is_named_without_its_password() -> None:
    export = PostgresExport(f"postgresql://swarm:pg-s3cret@127.0.0.1:{free_port()}/x", "t")
    reason = await export.check()
    assert reason is not None and reason.startswith("postgres: OperationalError")
    assert "pg-s3cret" not in reason

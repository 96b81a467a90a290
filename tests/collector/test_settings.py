"""Collector settings from the environment: names, defaults, what disables what."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.collector.settings import CollectorSettings


def test_defaults_export_to_a_local_file_and_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SWARM_COLLECTOR_EXPORT_PATH", "FINDINGS_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    s = CollectorSettings(_env_file=None)
    assert (s.export_path, s.database_url, s.database_table) == (
        "./swarm-findings.jsonl",
        None,
        "findings",
    )


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_COLLECTOR_EXPORT_PATH", "")
    monkeypatch.setenv("FINDINGS_DATABASE_URL", "postgresql://u:secret@db/findings")
    monkeypatch.setenv("SWARM_COLLECTOR_DATABASE_TABLE", "swarm.findings")
    s = CollectorSettings(_env_file=None)
    assert s.export_path == ""  # disabled
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql://u:secret@db/findings"
    assert "secret" not in repr(s)
    assert s.database_table == "swarm.findings"


def test_an_empty_database_url_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINDINGS_DATABASE_URL", "")
    assert CollectorSettings(_env_file=None).database_url is None


@pytest.mark.parametrize("table", ["", "a b", "x;drop table y", "a.b.c", "1abc"])
def test_a_table_name_that_is_not_an_identifier_is_refused(table: str) -> None:
    with pytest.raises(ValidationError, match="database_table"):
        CollectorSettings(database_table=table, _env_file=None)

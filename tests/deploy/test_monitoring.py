"""Prometheus configuration, alert rules (with promtool's own unit tests) and the Grafana
dashboard: every query parses (promtool), and every metric and label it names exists, in
shared/runtime/metrics.py, in redis_exporter's stream metrics or in Prometheus itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.metrics import Metrics
from tests.deploy.conftest import DEPLOY, promtool

PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "swarm.yml"
RULE_TESTS = PROM / "tests" / "swarm.test.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# Labels every scraped series gets from Prometheus under any service discovery; the ones a
# discovery adds besides (compose's service, Kubernetes' namespace and pod) are not relied on
# (test_monitoring_shapes.py).
TARGET_LABELS = {"job", "instance"}
# redis_exporter's metrics used here: stream ones (exporter/streams.go, the consumer-level
# ones off) and memory.
REDIS_EXPORTER = {
    "redis_memory_used_bytes": set(),
    "redis_memory_max_bytes": set(),
    "redis_stream_length": {"db", "stream"},
    "redis_stream_groups": {"db", "stream"},
    "redis_stream_group_consumers": {"db", "stream", "group"},
    "redis_stream_group_messages_pending": {"db", "stream", "group"},
    "redis_stream_group_lag": {"db", "stream", "group"},
    "redis_stream_group_entries_read": {"db", "stream", "group"},
}
PROMETHEUS_ITSELF = {"up": set[str]()}
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
    # aggregation operators, which may be followed by `by (...)` rather than `(`
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}  # fmt: skip


def swarm_metrics() -> dict[str, set[str]]:
    """Every sample name the services export, with its label names."""
    out: dict[str, set[str]] = {}
    metrics = Metrics.create()
    for field in metrics.__dataclass_fields__:
        metric: Any = getattr(metrics, field)
        if field == "registry":
            continue
        name, kind, labels = metric._name, metric._type, set(metric._labelnames)
        suffixes = {
            "counter": ["_total"],
            "gauge": [""],
            "histogram": ["_bucket", "_sum", "_count"],
        }
        for suffix in suffixes[kind]:
            out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def recorded() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                by = re.search(r"\bby \(([^)]*)\)", rule["expr"])
                out[rule["record"]] = {x.strip() for x in by.group(1).split(",")} if by else set()
    return out


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables, as Grafana would fill them in."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    expr = expr.replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it is matched on) for every series selector in `expr`."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    found: list[tuple[str, set[str]]] = []
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", text):
        name, matchers, call = m.group(1), m.group(2), m.group(3)
        if call or name in KEYWORDS:
            continue
        before = text[: m.start()].rstrip()
        if re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$", before):
            continue  # a label inside a grouping clause
        if before.endswith(("[", ":")) or re.match(r"\d", name):
            continue
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    out: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        out |= {x.strip() for x in group.split(",") if x.strip()}
    return out


def check_names(expr: str, known: dict[str, set[str]]) -> list[str]:
    """Problems: unknown metrics, labels a metric does not have, grouping by labels that
    none of the expression's metrics has."""
    problems = []
    seen: set[str] = set(TARGET_LABELS)
    seen |= set(re.findall(r'label_replace\([^,]+,\s*"(\w+)"', expr))
    for name, labels in selectors(expr):
        if name not in known:
            problems.append(f"unknown metric {name}")
            continue
        seen |= known[name]
        extra = labels - known[name] - TARGET_LABELS - {"__name__"}
        if extra:
            problems.append(f"{name} has no label {sorted(extra)}")
    missing = grouping_labels(expr) - seen
    if missing:
        problems.append(f"grouping by {sorted(missing)}, which no metric here has")
    return problems


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}:p{panel['id']}:{target['refId']}", target["expr"]))
    return out


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


# -- promtool -----------------------------------------------------------------------------------
def test_prometheus_config_and_its_rules_are_valid() -> None:
    res = run_promtool("check", "config", str(PROM / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout + res.stderr


def test_rules_are_valid() -> None:
    res = run_promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    res = run_promtool("test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_rule_unit_tests_fail_when_an_alert_changes(tmp_path: Path) -> None:
    """The unit tests can fail: the lag alert made to need 10x the backlog stops firing."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    rules = RULES.read_text()
    changed = rules.replace("swarm:stream_group_lag:max > 100", "swarm:stream_group_lag:max > 1000")
    assert changed != rules
    (tmp_path / "rules" / "swarm.yml").write_text(changed)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "swarm.test.yml")
    res = run_promtool("test", "rules", str(tmp_path / "tests" / "swarm.test.yml"))
    assert res.returncode != 0
    assert "SwarmStreamLagGrowing" in res.stdout + res.stderr


def _as_rules(queries: list[tuple[str, str]], path: Path) -> None:
    rules = [
        {"record": "dash:" + re.sub(r"[^a-zA-Z0-9_:]", "_", ref), "expr": grafana_to_promql(e)}
        for ref, e in queries
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    _as_rules(queries, tmp_path / "dash.yml")
    res = run_promtool("check", "rules", str(tmp_path / "dash.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(queries)} rules found" in res.stdout + res.stderr


def test_a_broken_dashboard_query_is_caught(tmp_path: Path) -> None:
    _as_rules(
        [("broken:p1:A", "sum by (vendor) (rate(swarm_llm_cost_usd_total[5m])")], tmp_path / "b.yml"
    )
    res = run_promtool("check", "rules", str(tmp_path / "b.yml"))
    assert res.returncode != 0


# -- names --------------------------------------------------------------------------------------
def test_dashboards_use_only_exported_metrics_and_labels() -> None:
    known = swarm_metrics() | REDIS_EXPORTER | PROMETHEUS_ITSELF | recorded()
    problems = [f"{ref}: {p}" for ref, e in dashboard_queries() for p in check_names(e, known)]
    assert problems == []


def test_rules_use_only_exported_metrics() -> None:
    known = swarm_metrics() | REDIS_EXPORTER | PROMETHEUS_ITSELF | recorded()
    problems = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        allowed = known
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            problems += [f"{name}: {p}" for p in check_names(rule["expr"], allowed)]
    assert problems == []


def test_the_name_check_catches_mistakes() -> None:
    known = swarm_metrics() | REDIS_EXPORTER | PROMETHEUS_ITSELF
    assert (
        check_names('sum by (vendor) (rate(swarm_llm_cost_usd_total{vendor=~".*"}[1m]))', known)
        == []
    )
    assert check_names("rate(swarm_llm_cost_total[1m])", known) == [
        "unknown metric swarm_llm_cost_total"
    ]
    assert check_names('swarm_llm_cost_usd_total{kind="input"}', known) == [
        "swarm_llm_cost_usd_total has no label ['kind']"
    ]
    assert check_names("sum by (shard) (swarm_llm_cost_usd_total)", known) == [
        "grouping by ['shard'], which no metric here has"
    ]
    assert check_names("swarm_vendor_cooldown == 1", known) == [
        "unknown metric swarm_vendor_cooldown"
    ]


def test_dashboard_shows_what_operators_asked_for() -> None:
    used = {name for _ref, e in dashboard_queries() for name, _ in selectors(e)}
    for needed in (
        "swarm_worker_tasks_total",  # throughput per vendor
        "swarm_llm_request_duration_seconds_bucket",  # latency per vendor
        "swarm_llm_cost_usd_total",  # cost per vendor
        "swarm_llm_tokens_total",  # input / output / cached tokens
        "swarm_llm_requests_total",  # errors
        "swarm_llm_retries_total",  # retries
        "swarm:stream_group_lag:max",  # lag per consumer group (swarm_stream_lag)
        "swarm:stream_group_pending:max",  # pending per consumer group
        "swarm:stream_group_consumers:count",  # live workers per vendor, consumers per group
        "swarm_dead_letters_total",
        "swarm_rejected_tasks_total",
        "swarm_shard_cache_events_total",  # shard cache hit ratio
    ):
        assert needed in used, needed


# -- Grafana ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_a_provisionable_raw_model(path: Path) -> None:
    text = path.read_text()
    dash = json.loads(text)
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    assert dash["title"] and dash["uid"] and len(dash["uid"]) <= 40
    assert dash.get("id") is None
    assert "__inputs" not in dash and "${DS_" not in text
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        sources = [panel.get("datasource")] + [
            t.get("datasource") for t in panel.get("targets", [])
        ]
        for ds in filter(None, sources):
            assert ds == {"type": "prometheus", "uid": uid}, panel["title"]
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == uid

"""The rules and the dashboard select series under compose and on Kubernetes alike.

The labels a scraped series carries besides its own depend on service discovery: compose's
DNS discovery (deploy/prometheus/prometheus.yml) gives job, instance and service; pod
discovery on Kubernetes (deploy/prometheus/kubernetes-scrape.yml, on the pods of
deploy/k8s) gives job, instance, namespace, pod and the pod's labels. Each shape is made
here by applying that file's relabelling to what the discovery would find, then series of
that shape are written for every selector of every rule and dashboard query, and promtool
evaluates each selector, and each dashboard query whole, on them: every one must select
something in both shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, load_yaml_documents
from tests.deploy.test_monitoring import (
    DASHBOARDS,
    PROM,
    PROMETHEUS_ITSELF,
    REDIS_EXPORTER,
    RULES,
    dashboard_queries,
    grafana_to_promql,
    run_promtool,
    swarm_metrics,
)

# Label values the services really use, tried in order for a selector's matchers.
CANDIDATES = {
    "stream": ["swarm:queue:deepseek", "swarm:tasks", "swarm:dlq", "swarm:tasks:rejected"],
    "group": ["worker-deepseek", "dispatcher", "collector", "megashard"],
    "vendor": ["deepseek", "claude"],
    "outcome": ["ok", "done", "acked", "rate_limited", "rerouted"],
    "kind": ["input", "cache_read", "output", "vendor"],
    "event": ["hit", "miss"],
    "le": ["+Inf"],
}
SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\[|\()?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
FUNCTIONS_AND_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


# -- the two shapes -----------------------------------------------------------------------------
def relabel(meta: dict[str, str], configs: list[dict[str, object]]) -> dict[str, str] | None:
    """Prometheus' relabelling (replace, keep, labelmap), enough for these files."""
    labels = dict(meta)
    for rc in configs:
        action = rc.get("action", "replace")
        regex = re.compile(str(rc.get("regex", "(.*)")))
        if action == "labelmap":
            for name, value in list(labels.items()):
                m = regex.fullmatch(name)
                if m:
                    labels[m.expand(r"\1")] = value
            continue
        sources = rc.get("source_labels", [])
        assert isinstance(sources, list)
        value = str(rc.get("separator", ";")).join(labels.get(str(s), "") for s in sources)
        m = regex.fullmatch(value)
        if action == "keep":
            if not m:
                return None
        elif action == "replace" and m:
            replacement = str(rc.get("replacement", "$1"))
            labels[str(rc["target_label"])] = m.expand(re.sub(r"\$(\d+)", r"\\g<\1>", replacement))
        elif action != "replace":
            raise AssertionError(f"relabel action {action} is not simulated here")
    if "instance" not in labels:
        labels["instance"] = labels["__address__"]
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def swarm_job(path: Path) -> dict[str, object]:
    jobs = yaml.safe_load(path.read_text())["scrape_configs"]
    (job,) = [j for j in jobs if j["job_name"] == "swarm"]
    return job


def compose_shape() -> dict[str, str]:
    job = swarm_job(PROM / "prometheus.yml")
    meta = {"__address__": "10.0.0.4:9100", "__meta_dns_name": "worker-deepseek"}
    labels = relabel(meta, job.get("relabel_configs", []))  # type: ignore[arg-type]
    assert labels is not None
    return {"job": str(job["job_name"]), **labels}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def kubernetes_shape() -> dict[str, str]:
    """A worker pod of deploy/k8s, as pod discovery finds it and kubernetes-scrape.yml
    relabels it."""
    job = swarm_job(PROM / "kubernetes-scrape.yml")
    pods = [
        d["spec"]["template"]["metadata"]  # type: ignore[index]
        for path in sorted((DEPLOY / "k8s").rglob("*.yaml"))
        for d in load_yaml_documents(path)
        if d.get("kind") == "Deployment"
    ]
    scraped = [p for p in pods if p.get("annotations", {}).get("prometheus.io/scrape") == "true"]
    assert scraped, "no Deployment of deploy/k8s asks to be scraped"
    pod = scraped[0]
    name = pod["labels"].get("app.kubernetes.io/name", "pod")
    meta = {
        "__address__": "10.244.1.7",
        "__meta_kubernetes_namespace": "swarm",
        "__meta_kubernetes_pod_name": f"{name}-5f7c9d-x2x7k",
    }
    for key, value in pod.get("annotations", {}).items():
        meta[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = value
    for key, value in pod.get("labels", {}).items():
        meta[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = value
    labels = relabel(meta, job["relabel_configs"])  # type: ignore[arg-type]
    assert labels is not None, "kubernetes-scrape.yml drops the pods of deploy/k8s"
    return {"job": str(job["job_name"]), **labels}


SHAPES = {"compose": compose_shape, "kubernetes": kubernetes_shape}


# -- selectors and the series that satisfy them -------------------------------------------------
def selectors(expr: str) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(text, metric, matchers) of every series selector in `expr`."""
    masked = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: "_" * len(m.group(0)), expr)
    found = []
    for m in SELECTOR.finditer(masked):
        name, braces, after = m.group(1), m.group(2), m.group(3)
        if after == "(" or name in FUNCTIONS_AND_KEYWORDS or re.match(r"\d", name):
            continue
        before = masked[: m.start()].rstrip()
        if re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$", before):
            continue
        if before.endswith(("[", ":")):
            continue
        text = expr[m.start(1) : m.end(2) if braces else m.end(1)]
        found.append((text, name, MATCHER.findall(text[len(name) :])))
    return found


def _fits(value: str, op: str, want: str) -> bool:
    hit = re.fullmatch(want, value) is not None if "~" in op else value == want
    return hit if op in ("=", "=~") else not hit


def series_for(
    name: str, matchers: list[tuple[str, str, str]], own: set[str], shape: dict[str, str]
) -> str | None:
    """A series of `shape` that `matchers` select, or None when its labels cannot."""
    labels = dict(shape)
    for label in sorted(own):
        tried = [v for _, op, v in matchers if op == "="] + CANDIDATES.get(label, []) + ["x"]
        conds = [(op, v) for lbl, op, v in matchers if lbl == label]
        labels[label] = next((v for v in tried if all(_fits(v, o, w) for o, w in conds)), "")
    for label, op, want in matchers:
        if not _fits(labels.get(label, ""), op, want):
            return None
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v != "")
    return f"{name}{{{body}}}"


def raw_selectors() -> dict[str, list[str]]:
    """Selectors of exported metrics (recorded ones come from the rules), by where used."""
    rules = yaml.safe_load(RULES.read_text())["groups"]
    out: dict[str, list[str]] = {}
    for group in rules:
        for rule in group["rules"]:
            out[rule.get("alert") or rule["record"]] = [rule["expr"]]
    for ref, expr in dashboard_queries():
        out[ref] = [grafana_to_promql(expr)]
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert found, var["definition"]
            out[f"{path.stem}:${var['name']}"] = [found.group(1)]
    return out


def promtool_test(exprs: dict[str, list[str]], shape: dict[str, str], tmp: Path) -> str:
    """promtool's output for: each selector (and each dashboard query whole) selects a
    series of `shape` at 10m."""
    known = swarm_metrics() | REDIS_EXPORTER | PROMETHEUS_ITSELF
    series: set[str] = set()
    checks: dict[str, str] = {}
    for where, (expr,) in exprs.items():
        for text, name, matchers in selectors(expr):
            if name not in known:
                continue  # a recorded series: the rules make it from the ones below
            made = series_for(name, matchers, known[name], shape)
            if made is None:
                checks[f"{where}: {text}"] = text  # left to fail, named
                continue
            series.add(made)
            checks[f"{where}: {text}"] = text
        if ":p" in where:  # a dashboard query, evaluated whole
            checks[f"{where} (whole query)"] = expr
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": "1+1x20"} for s in sorted(series)],
                "promql_expr_test": [
                    {
                        "expr": f"clamp_max(count({expr}), 1)",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for expr in checks.values()
                ],
            }
        ],
    }
    path = tmp / "shape.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    res = run_promtool("test", "rules", str(path))
    return ("SUCCESS" if res.returncode == 0 else "FAILED") + "\n" + res.stdout + res.stderr


# -- tests --------------------------------------------------------------------------------------
def test_the_two_shapes_differ_as_their_discoveries_do() -> None:
    compose, kubernetes = compose_shape(), kubernetes_shape()
    assert compose["job"] == kubernetes["job"] == "swarm"
    assert compose["service"] == "worker-deepseek"
    assert "service" not in kubernetes
    assert kubernetes["namespace"] == "swarm" and kubernetes["instance"] == "10.244.1.7:9100"
    assert "app_kubernetes_io_name" in kubernetes


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_rule_and_dashboard_query_selects_series_of_each_shape(
    shape: str, tmp_path: Path
) -> None:
    exprs = raw_selectors()
    assert len(exprs) >= 45
    out = promtool_test(exprs, SHAPES[shape](), tmp_path)
    assert out.startswith("SUCCESS"), out[-6000:]


def test_a_query_that_needs_compose_labels_is_caught_on_kubernetes(tmp_path: Path) -> None:
    """The dashboard's former live-workers query, by compose's `service` label."""
    query = {"old:p30:A": ['sum by (service) (up{job="swarm", service=~"worker-.+"})']}
    assert promtool_test(query, compose_shape(), tmp_path).startswith("SUCCESS")
    out = promtool_test(query, kubernetes_shape(), tmp_path)
    assert out.startswith("FAILED"), out
    assert "worker-.+" in out and "got: nil" in out, out


def test_a_selector_on_a_label_no_metric_has_is_caught(tmp_path: Path) -> None:
    query = {"old:p1:A": ['sum(rate(swarm_llm_requests_total{provider="x"}[1m]))']}
    assert promtool_test(query, compose_shape(), tmp_path).startswith("FAILED")

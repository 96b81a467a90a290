"""deploy/k8s: schema-valid (kubernetes-validate --strict; KEDA's CRD schemas through node),
rendered by kustomize, and consistent with the swarm: /livez and /readyz probes on the
metrics port, resource requests, secrets by reference only, and one KEDA ScaledObject per
vendor worker on that vendor's stream and consumer group as shared/protocol/names.py
spells them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.protocol import Names
from shared.runtime.settings import BusSettings
from tests.deploy.conftest import DEPLOY, keda_node_dir, load_yaml_documents, venv_tool

K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
VENDORS = ("claude", "gemini", "openai", "deepseek", "codex")
VENDOR_KEYS = {
    "claude": {"ANTHROPIC_API_KEY"},
    "gemini": {"GOOGLE_API_KEY"},
    "openai": {"OPENAI_API_KEY"},
    "deepseek": {"DEEPSEEK_API_KEY"},
    "codex": {"OPENAI_API_KEY"},
}
ALL_KEYS = {"ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "OPENAI_API_KEY",
            "DEEPSEEK_API_KEY", "OPENAI_COMPATIBLE_API_KEY"}  # fmt: skip
# keda-docs, scalers/redis-streams: every metadata key the scaler reads.
REDIS_STREAMS_KEYS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl",
    "databaseIndex",
}  # fmt: skip


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


def documents() -> list[dict[str, Any]]:
    return [d for p in manifests() for d in load_yaml_documents(p)]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def config() -> dict[str, str]:
    data: dict[str, str] = of_kind("ConfigMap")["swarm-config"]["data"]
    return data


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", "-k", "1.33", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- schemas ------------------------------------------------------------------------------------
def test_manifests_pass_kubernetes_schemas_strictly() -> None:
    res = kubernetes_validate(*manifests())
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    core = [d for d in documents() if not d["apiVersion"].startswith("keda.sh/")]
    assert out.count("passed for resource") == len(core), out
    # Only KEDA's kinds lack a schema here; they are checked by the node test below.
    unknown = re.findall(r"Couldn't find schema for kind (\w+)", out)
    assert set(unknown) == {"ScaledObject", "TriggerAuthentication"}


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    deployment = of_kind("Deployment")["dispatcher"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    res = kubernetes_validate(path)
    assert res.returncode != 0


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load(KUSTOMIZATION.read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in manifests())


def test_kustomize_renders_a_valid_whole(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed here")
    res = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    rendered = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert len(rendered) == len(documents())
    namespace = yaml.safe_load(KUSTOMIZATION.read_text())["namespace"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "swarmbus"
    (tmp_path / "all.yaml").write_text(res.stdout)
    check = kubernetes_validate(tmp_path / "all.yaml")
    assert check.returncode == 0, check.stdout + check.stderr


def _node(folder: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    script = folder / "validate_keda.mjs"
    shutil.copy(Path(__file__).with_name("validate_keda.mjs"), script)
    return subprocess.run(
        ["node", str(script), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=folder,
    )


def test_keda_objects_pass_the_keda_crd_schemas(tmp_path: Path) -> None:
    folder = keda_node_dir()
    res = _node(folder, *manifests())
    assert res.returncode == 0, res.stdout + res.stderr
    keda = [d for d in documents() if d["apiVersion"] == "keda.sh/v1alpha1"]
    assert f"checked {len(keda)}, failed 0" in res.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "keda.yaml").read_text().replace('lagCount: "50"', "lagCount: 50", 1))
    res = _node(folder, bad)
    assert res.returncode != 0 and "lagCount must be string" in res.stdout


# -- the swarm's own rules ------------------------------------------------------------------------
def containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (name, d["spec"]["template"]["spec"], c)
        for name, d in of_kind("Deployment").items()
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_service_has_health_probes_on_its_metrics_port_and_requests() -> None:
    assert config()["METRICS_PORT"] == "9100"
    names = set(of_kind("Deployment"))
    assert {"dispatcher", "collector", *(f"worker-{v}" for v in VENDORS)} <= names
    assert any(n.startswith("megashard") for n in names)
    for name, _pod, c in containers():
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"metrics": 9100}, name
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
            get = c[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, "metrics"), (name, probe)
            # The endpoints answer within ~2 s (readiness checks are bounded at 2 s each).
            assert c[probe]["timeoutSeconds"] >= 3, (name, probe)
        requests = c["resources"]["requests"]
        assert requests["cpu"] and requests["memory"], name
        assert c["resources"]["limits"]["memory"], name


def test_pods_run_as_the_images_numeric_user_and_outlast_the_drain() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert user is not None
    drain = float(config()["SWARM_DRAIN_TIMEOUT_S"])
    assert drain == BusSettings().drain_timeout_s
    for name, pod, c in containers():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, user.groups()))
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["terminationGracePeriodSeconds"] > drain + BusSettings().block_ms / 1000 + 5
        assert c["args"][:2] == ["swarm", "run"], name


def test_secrets_are_referenced_never_written() -> None:
    assert "Secret" not in {d["kind"] for d in documents()}
    acl_users = {
        line.split()[1] for line in (DEPLOY / "redis" / "users.acl").read_text().splitlines()
    }
    for name, _pod, c in containers():
        env = env_of(c)
        redis = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert redis["name"] == "swarm-redis"
        assert redis["key"] in acl_users, f"{name} logs in as {redis['key']}, not an ACL user"
        for var, entry in env.items():
            if var in ALL_KEYS or (
                var.endswith(("_URL", "_PASSWORD")) and var != "SWARM_SIMULATOR_URL"
            ):
                assert "value" not in entry, f"{name} writes {var} in the manifest"
        keys = {k for k in env if k in ALL_KEYS}
        if name.startswith("worker-"):
            assert keys == VENDOR_KEYS[name.removeprefix("worker-")], name
        elif name.startswith("megashard"):
            assert keys == {"ANTHROPIC_API_KEY", "GOOGLE_API_KEY"}
        else:
            assert keys == set(), name
    for value in config().values():
        assert "@" not in value and "://" not in value, "credentials belong in a Secret"


def scaled_object_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the KEDA objects of `docs`, as the swarm needs them."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    cm = by_kind["ConfigMap"]["swarm-config"]["data"]
    names = Names(cm["SWARM_NAMESPACE"])
    scaled, deployments = by_kind.get("ScaledObject", {}), by_kind["Deployment"]
    auth = by_kind.get("TriggerAuthentication", {})
    problems = []
    if set(scaled) != {f"worker-{v}" for v in VENDORS}:
        problems.append(f"ScaledObjects {sorted(scaled)}")
    for name, obj in scaled.items():
        so, vendor = obj["spec"], name.removeprefix("worker-")
        target = deployments.get(so["scaleTargetRef"]["name"])
        if target is None:
            problems.append(f"{name}: no Deployment {so['scaleTargetRef']['name']}")
            continue
        container = target["spec"]["template"]["spec"]["containers"][0]
        if container["args"] != ["swarm", "run", "worker", "--vendor", vendor]:
            problems.append(f"{name}: scales {container['args']}")
        if so["minReplicaCount"] < 1:
            problems.append(f"{name}: a vendor at 0 replicas is never routed to, never wakes")
        streams = [t["metadata"].get("stream") for t in so["triggers"]]
        if streams != list(names.vendor_task_levels(vendor)):
            problems.append(f"{name}: streams {streams}, not one per urgency level")
        for trigger in so["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "redis-streams":
                problems.append(f"{name}: trigger {trigger['type']}")
            if set(meta) - REDIS_STREAMS_KEYS:
                problems.append(f"{name}: unknown keys {sorted(set(meta) - REDIS_STREAMS_KEYS)}")
            if meta.get("consumerGroup") != Names.worker_group(vendor):
                problems.append(f"{name}: group {meta.get('consumerGroup')}")
            lag = meta.get("lagCount")
            if not (isinstance(lag, str) and lag.isdigit() and int(lag) > 0):
                problems.append(f"{name}: lagCount {lag!r} (lag mode needs a positive string)")
            if meta.get("addressFromEnv") not in env_of(container):
                problems.append(f"{name}: {meta.get('addressFromEnv')} not in the target's env")
            ref = auth.get(trigger.get("authenticationRef", {}).get("name", ""))
            if ref is None or {r["parameter"] for r in ref["spec"]["secretTargetRef"]} != {
                "username",
                "password",
            }:
                problems.append(f"{name}: no username/password TriggerAuthentication")
    return problems


def test_one_scaled_object_per_vendor_on_its_stream_and_group() -> None:
    assert scaled_object_problems(documents()) == []


def test_the_scaled_object_check_sees_mistakes() -> None:
    docs = documents()
    so = next(
        d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["name"] == "worker-gemini"
    )
    meta = so["spec"]["triggers"][0]["metadata"]
    meta["lagCnt"] = meta.pop("lagCount")
    meta["consumerGroup"] = "worker-claude"
    so["spec"]["minReplicaCount"] = 0
    del so["spec"]["triggers"][-1]  # the low level's
    assert scaled_object_problems(docs) == [
        "worker-gemini: a vendor at 0 replicas is never routed to, never wakes",
        "worker-gemini: streams ['swarm:queue:gemini:critical', 'swarm:queue:gemini:high', "
        "'swarm:queue:gemini'], not one per urgency level",
        "worker-gemini: unknown keys ['lagCnt']",
        "worker-gemini: group worker-claude",
        "worker-gemini: lagCount None (lag mode needs a positive string)",
    ]

"""deploy/k8s, as `kubectl apply -k deploy/k8s/overlays/<overlay>` would send it: each overlay
rendered by kustomize (its Go library, tests/deploy/kustomize_build.py), every object
schema-valid (kubernetes-validate --strict; KEDA's CRD schemas through node), and the
properties the swarm needs, each checked by a function that a test also shows failing:
no `replicas` on a KEDA-scaled Deployment (so applying again never resets KEDA's scale),
a PodDisruptionBudget per service, NetworkPolicies (services reach DNS, Redis and, for the
callers, vendor APIs only; Redis admits the swarm only), probes on /livez and /readyz, the
Redis option (StatefulSet with AOF on a PVC, or an external Redis over TLS by Secret; the
StatefulSet's redis.conf and arguments also run in a real redis-server with the ACL file made
as the README says), and a README "Deploy" section that agrees with the manifests on TLS,
ports and Secrets."""

from __future__ import annotations

import copy
import functools
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from shared.protocol import Names
from shared.runtime.net import free_port
from shared.runtime.settings import BusSettings
from tests.deploy.conftest import (
    DEPLOY,
    ROOT,
    keda_node_dir,
    kustomize_library,
    venv_tool,
)

K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod", "prod-external-redis")
IN_CLUSTER_REDIS = ("dev", "prod")
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
# Egress each kind of service needs (component label -> TCP/UDP ports it may open).
EGRESS_PORTS = {
    "dispatcher": {53, "redis"},
    "collector": {53, "redis", 5432},
    "worker": {53, "redis", 443},
    "megashard": {53, "redis", 443},
}
# Where pod, service and metadata addresses live; the vendor rule must exclude them all.
CLUSTER_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
CLUSTER_RANGES_V6 = {"fc00::/7", "fe80::/10"}

Doc = dict[str, Any]


# -- rendering ----------------------------------------------------------------------------------
def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(Path(__file__).with_name("kustomize_build.py")),
         str(kustomize_library()), str(folder)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@functools.cache
def render_text(overlay: str) -> str:
    res = kustomize(K8S / "overlays" / overlay)
    assert res.returncode == 0, res.stderr
    return res.stdout


def rendered(overlay: str) -> list[Doc]:
    """A fresh copy of the overlay's objects (tests may change it)."""
    return [d for d in yaml.safe_load_all(render_text(overlay)) if d]


def by_kind(docs: list[Doc]) -> dict[str, dict[str, Doc]]:
    out: dict[str, dict[str, Doc]] = {}
    for d in docs:
        out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def swarm_services(docs: list[Doc]) -> dict[str, Doc]:
    return by_kind(docs)["Deployment"]


def config(docs: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = by_kind(docs)["ConfigMap"]["swarm-config"]["data"]
    return data


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# -- schemas ------------------------------------------------------------------------------------
def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", "-k", "1.33", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_objects_that_pass_kubernetes_schemas_strictly(
    overlay: str, tmp_path: Path
) -> None:
    docs = rendered(overlay)
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(render_text(overlay))
    res = kubernetes_validate(path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    assert out.count("passed for resource") == len(core), out
    # Only KEDA's kinds lack a schema here; they are checked by the node test below.
    unknown = re.findall(r"Couldn't find schema for kind (\w+)", out)
    assert set(unknown) == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "swarm", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "swarmbus"


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    deployment = swarm_services(rendered("prod"))["dispatcher"]
    pod_spec(deployment)["containers"][0]["livenessprobe"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    assert kubernetes_validate(path).returncode != 0


def test_kustomize_fails_on_a_broken_kustomization(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    res = kustomize(tmp_path)
    assert res.returncode == 1 and res.stdout == ""
    assert "missing.yaml" in res.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectls_own_kustomize_renders_the_same(overlay: str) -> None:
    """`kubectl apply -k` renders with the kustomize built into kubectl, of another version
    than ours; where a kubectl is installed, both must agree object for object (they once
    did not on the labels of Redis's claim templates, which a StatefulSet never changes)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl here to compare with (it is not needed otherwise)")
    res = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [d for d in yaml.safe_load_all(res.stdout) if d] == rendered(overlay)


def test_each_kustomization_lists_every_manifest_beside_it() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert len(kustomizations) == 1 + 2 + len(OVERLAYS)  # base, two Redis components, overlays
    for kustomization in kustomizations:
        folder = kustomization.parent
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        local = sorted(r for r in listed if not r.startswith(".."))
        assert local == sorted(p.name for p in folder.glob("*.yaml") if p != kustomization)
    assert sorted(p.name for p in (K8S / "overlays").iterdir()) == sorted(OVERLAYS)


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
    files, keda = [], 0
    for overlay in OVERLAYS:
        files.append(tmp_path / f"{overlay}.yaml")
        files[-1].write_text(render_text(overlay))
        keda += sum(d["apiVersion"] == "keda.sh/v1alpha1" for d in rendered(overlay))
    res = _node(folder, *files)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"checked {keda}, failed 0" in res.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(render_text("prod").replace('lagCount: "50"', "lagCount: 50", 1))
    res = _node(folder, bad)
    assert res.returncode != 0 and "lagCount must be string" in res.stdout


# -- KEDA owns the workers' replica count -------------------------------------------------------
def replica_problems(docs: list[Doc]) -> list[str]:
    """Deployments that KEDA scales but whose manifest also sets the replica count."""
    kinds = by_kind(docs)
    problems = []
    for so in kinds.get("ScaledObject", {}).values():
        target = so["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment":
            problems.append(f"{so['metadata']['name']}: scales a {target['kind']}")
            continue
        deployment = kinds["Deployment"].get(target["name"])
        if deployment is None:
            problems.append(f"{so['metadata']['name']}: no Deployment {target['name']}")
        elif "replicas" in deployment["spec"]:
            problems.append(f"{target['name']}: replicas {deployment['spec']['replicas']}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_keda_scaled_deployment_sets_its_replica_count(overlay: str) -> None:
    docs = rendered(overlay)
    assert len(by_kind(docs)["ScaledObject"]) == len(VENDORS)
    assert replica_problems(docs) == []


def test_the_replica_check_sees_a_replica_count() -> None:
    docs = rendered("prod")
    swarm_services(docs)["worker-gemini"]["spec"]["replicas"] = 1
    assert replica_problems(docs) == ["worker-gemini: replicas 1"]


def client_side_apply(live: Doc | None, new: Doc) -> Doc:
    """What `kubectl apply` (client side) leaves on the server: a three-way merge of the
    last applied configuration (kept in an annotation), the live object and the new one.
    A field is set when the new configuration has it and the live value differs; a field
    the last configuration had and the new one lacks is removed; a field in neither (a
    replica count KEDA's HPA set) is left alone. Lists are replaced whole, as for the
    fields here. The API server defaults a new Deployment's replicas to 1."""
    if live is None:
        created = copy.deepcopy(new)
        created["spec"].setdefault("replicas", 1)
        created["metadata"].setdefault("annotations", {})["last-applied"] = copy.deepcopy(new)
        return created
    last = live["metadata"]["annotations"]["last-applied"]

    def merge(live_part: Doc, last_part: Doc, new_part: Doc) -> None:
        for key, value in new_part.items():
            if isinstance(value, dict) and isinstance(live_part.get(key), dict):
                merge(live_part[key], last_part.get(key) or {}, value)
            elif live_part.get(key) != value:
                live_part[key] = copy.deepcopy(value)
        for key in set(last_part) - set(new_part):
            live_part.pop(key, None)

    result = copy.deepcopy(live)
    merge(result, last, new)
    result["metadata"]["annotations"]["last-applied"] = copy.deepcopy(new)
    return result


def scale_after_two_applies(deployment: Doc) -> int:
    live = client_side_apply(None, deployment)
    live["spec"]["replicas"] = 7  # KEDA's HPA scales out under lag
    for _ in range(2):
        live = client_side_apply(live, deployment)
    replicas: int = live["spec"]["replicas"]
    return replicas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_applying_an_overlay_twice_keeps_the_scale_keda_set(overlay: str) -> None:
    services = swarm_services(rendered(overlay))
    for vendor in VENDORS:
        assert scale_after_two_applies(services[f"worker-{vendor}"]) == 7, vendor


def test_a_replica_count_in_the_manifest_would_reset_keda_on_apply() -> None:
    worker = swarm_services(rendered("prod"))["worker-claude"]
    worker["spec"]["replicas"] = 1
    assert scale_after_two_applies(worker) == 1


# -- PodDisruptionBudgets -----------------------------------------------------------------------
def pdb_problems(docs: list[Doc]) -> list[str]:
    """Each swarm service needs exactly one PDB that lets at most one pod go at a time
    (maxUnavailable 1: minAvailable would block every drain of a single replica)."""
    pdbs = by_kind(docs).get("PodDisruptionBudget", {}).values()
    problems = []
    for name, deployment in swarm_services(docs).items():
        mine = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(deployment))]
        if len(mine) != 1:
            problems.append(f"{name}: {len(mine)} PodDisruptionBudgets")
            continue
        spec = mine[0]["spec"]
        if spec.get("maxUnavailable") != 1 or "minAvailable" in spec:
            problems.append(f"{name}: {mine[0]['metadata']['name']} allows {spec}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_one_disruption_budget(overlay: str) -> None:
    docs = rendered(overlay)
    assert len(swarm_services(docs)) == 3 + len(VENDORS)
    assert pdb_problems(docs) == []


def test_the_disruption_budget_check_sees_mistakes() -> None:
    docs = rendered("prod")
    pdbs = by_kind(docs)["PodDisruptionBudget"]
    docs.remove(pdbs["worker-codex"])
    pdbs["collector"]["spec"] = {
        "minAvailable": 1,
        "selector": pdbs["collector"]["spec"]["selector"],
    }
    assert pdb_problems(docs) == [
        "collector: collector allows {'minAvailable': 1, 'selector': "
        "{'matchLabels': {'app.kubernetes.io/name': 'collector'}}}",
        "worker-codex: 0 PodDisruptionBudgets",
    ]


# -- NetworkPolicies ----------------------------------------------------------------------------
def redis_port(docs: list[Doc]) -> int:
    """The in-cluster Redis Service's port, else the one the services' policy opens."""
    service = by_kind(docs).get("Service", {}).get("redis")
    if service is not None:
        return int(service["spec"]["ports"][0]["port"])
    policy = by_kind(docs)["NetworkPolicy"]["swarm-egress"]
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])} - {53}
    assert len(ports) == 1, ports
    return int(ports.pop())


def policies_for(docs: list[Doc], labels: dict[str, str], kind: str) -> list[Doc]:
    return [
        p
        for p in by_kind(docs).get("NetworkPolicy", {}).values()
        if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)
    ]


def outside_cluster(peer: Doc) -> bool:
    """An ipBlock peer that leaves out every range the cluster's addresses live in."""
    block = peer.get("ipBlock")
    if block is None:
        return False
    v4 = ipaddress.ip_network(block["cidr"]).version == 4
    return (CLUSTER_RANGES if v4 else CLUSTER_RANGES_V6) <= set(block.get("except", []))


def egress_problems(docs: list[Doc]) -> list[str]:
    """Every swarm service may open only DNS, Redis and (workers and mega-shards) HTTPS to
    addresses outside the cluster's ranges; the collector also PostgreSQL."""
    problems = []
    redis_pods = [pod_labels(s) for s in by_kind(docs).get("StatefulSet", {}).values()]
    for name, deployment in swarm_services(docs).items():
        labels = pod_labels(deployment)
        policies = policies_for(docs, labels, "Egress")
        if not policies:
            problems.append(f"{name}: no egress policy, may reach anything")
            continue
        expected = EGRESS_PORTS[labels["app.kubernetes.io/component"]]
        allowed: set[int | str] = set()
        for rule in (r for p in policies for r in p["spec"].get("egress", [])):
            if not rule.get("ports"):
                problems.append(f"{name}: an egress rule without ports")
                continue
            ports = {p["port"] for p in rule["ports"]}
            port: int | str = "redis" if ports == {redis_port(docs)} else min(ports)
            allowed.add(port)
            peers = rule.get("to", [])
            reaches = [any(selects(p.get("podSelector", {}), r) for p in peers) for r in redis_pods]
            if port == "redis" and not all(reaches):
                problems.append(f"{name}: the Redis rule does not reach Redis's pods")
            if port == 443 and not all(map(outside_cluster, peers)):
                problems.append(f"{name}: HTTPS to {peers}, not only outside the cluster")
        if allowed != expected:
            problems.append(f"{name}: egress to {sorted(map(str, allowed))}")
    return problems


def redis_ingress_problems(docs: list[Doc]) -> list[str]:
    """Redis admits the swarm's pods (all of them) and KEDA's operator, on Redis's port."""
    problems = []
    for server in by_kind(docs).get("StatefulSet", {}).values():
        policies = policies_for(docs, pod_labels(server), "Ingress")
        if not policies:
            problems.append("redis: no ingress policy, admits anything")
        rules = [r for p in policies for r in p["spec"].get("ingress", [])]
        for rule in rules:
            if [p["port"] for p in rule.get("ports", [])] != [redis_port(docs)]:
                problems.append(f"redis: ingress on {rule.get('ports')}")
            for peer in rule.get("from", [{}]):
                keda = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if keda == {"kubernetes.io/metadata.name": "keda"} and "podSelector" in peer:
                    continue
                if set(peer) != {"podSelector"} or selects(peer["podSelector"], {"app": "x"}):
                    problems.append(f"redis: admits {peer}")
        peers = [
            p["podSelector"] for r in rules for p in r.get("from", []) if set(p) == {"podSelector"}
        ]
        for name, deployment in swarm_services(docs).items():
            if not any(selects(s, pod_labels(deployment)) for s in peers):
                problems.append(f"redis: does not admit {name}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_only_dns_redis_and_vendor_apis(overlay: str) -> None:
    assert egress_problems(rendered(overlay)) == []


@pytest.mark.parametrize("overlay", IN_CLUSTER_REDIS)
def test_redis_admits_only_the_swarm_and_keda(overlay: str) -> None:
    assert redis_ingress_problems(rendered(overlay)) == []


def test_the_network_checks_see_mistakes() -> None:
    docs = rendered("prod")
    policies = by_kind(docs)["NetworkPolicy"]
    policies["swarm-egress"]["spec"]["egress"].append({"to": [{"podSelector": {}}]})
    vendors = policies["swarm-egress-vendor-apis"]["spec"]["egress"][0]["to"][0]["ipBlock"]
    vendors["except"] = ["10.0.0.0/8"]
    # A service whose pods lost the swarm's label (no includeTemplates): Redis refuses it.
    del pod_labels(swarm_services(docs)["dispatcher"])["app.kubernetes.io/part-of"]
    ingress = policies["redis-ingress"]["spec"]["ingress"][0]
    ingress["from"].append({"namespaceSelector": {}})
    problems = egress_problems(docs)
    assert "dispatcher: an egress rule without ports" in problems
    assert any(p.startswith("worker-claude: HTTPS to") for p in problems)
    assert redis_ingress_problems(docs) == [
        "redis: admits {'namespaceSelector': {}}",
        "redis: does not admit dispatcher",
    ]
    docs.remove(policies["swarm-egress"])
    assert "dispatcher: no egress policy, may reach anything" in egress_problems(docs)


# -- the services -------------------------------------------------------------------------------
def containers(docs: list[Doc]) -> list[tuple[str, Doc, Doc]]:
    return [
        (name, pod_spec(d), c)
        for name, d in swarm_services(docs).items()
        for c in pod_spec(d)["containers"]
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_health_probes_on_its_metrics_port_and_resources(overlay: str) -> None:
    docs = rendered(overlay)
    assert config(docs)["METRICS_PORT"] == "9100"
    names = set(swarm_services(docs))
    assert {"dispatcher", "collector", *(f"worker-{v}" for v in VENDORS)} <= names
    assert any(n.startswith("megashard") for n in names)
    for name, _pod, c in containers(docs):
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


# Kubernetes quantities (Ki, Mi, Gi) and Redis's units (kb, mb, gb are 1024-based there too).
MEMORY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 2**10, "mb": 2**20, "gb": 2**30}


def memory_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * MEMORY.get(unit, 1)


def test_dev_is_lighter_than_prod() -> None:
    def sizes(overlay: str) -> dict[str, int]:
        docs = rendered(overlay)
        out = {
            n: memory_bytes(c["resources"]["requests"]["memory"]) for n, _p, c in containers(docs)
        }
        out |= {
            f"max {n}": s["spec"]["maxReplicaCount"]
            for n, s in by_kind(docs)["ScaledObject"].items()
        }
        return out

    dev, prod = sizes("dev"), sizes("prod")
    assert dev.keys() == prod.keys()
    assert all(dev[k] <= prod[k] for k in dev)
    assert sum(dev.values()) < sum(prod.values()) / 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_images_numeric_user_and_outlast_the_drain(overlay: str) -> None:
    docs = rendered(overlay)
    user = re.search(r"^USER (\d+):(\d+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert user is not None
    drain = float(config(docs)["SWARM_DRAIN_TIMEOUT_S"])
    assert drain == BusSettings().drain_timeout_s
    for name, pod, c in containers(docs):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, user.groups()))
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["terminationGracePeriodSeconds"] > drain + BusSettings().block_ms / 1000 + 5
        assert c["args"][:2] == ["swarm", "run"], name


def acl_users() -> set[str]:
    lines = (DEPLOY / "redis" / "users.acl").read_text().splitlines()
    return {line.split()[1] for line in lines if line.startswith("user ")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_written(overlay: str) -> None:
    docs = rendered(overlay)
    assert "Secret" not in by_kind(docs)
    for name, _pod, c in containers(docs):
        env = env_of(c)
        login = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert login["name"] == "swarm-redis"
        assert login["key"] in acl_users(), f"{name} logs in as {login['key']}, not an ACL user"
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
    for value in config(docs).values():
        assert "@" not in value and "://" not in value, "credentials belong in a Secret"
    assert "keda" in acl_users()


# -- KEDA ---------------------------------------------------------------------------------------
def scaled_object_problems(docs: list[Doc]) -> list[str]:
    """What is wrong with the KEDA objects of `docs`, as the swarm needs them."""
    kinds = by_kind(docs)
    names = Names(config(docs)["SWARM_NAMESPACE"])
    scaled, deployments = kinds.get("ScaledObject", {}), kinds["Deployment"]
    auth = kinds.get("TriggerAuthentication", {})
    problems = []
    if set(scaled) != {f"worker-{v}" for v in VENDORS}:
        problems.append(f"ScaledObjects {sorted(scaled)}")
    for name, obj in scaled.items():
        so, vendor = obj["spec"], name.removeprefix("worker-")
        target = deployments.get(so["scaleTargetRef"]["name"])
        if target is None:
            problems.append(f"{name}: no Deployment {so['scaleTargetRef']['name']}")
            continue
        container = pod_spec(target)["containers"][0]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_scaled_object_per_vendor_on_its_stream_and_group(overlay: str) -> None:
    assert scaled_object_problems(rendered(overlay)) == []


def test_the_scaled_object_check_sees_mistakes() -> None:
    docs = rendered("prod")
    so = by_kind(docs)["ScaledObject"]["worker-gemini"]
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


# -- Redis: in the cluster, or external ---------------------------------------------------------
def redis_conf(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line and line[0] != "#")
    return {k: v for k, v in pairs}


def redis_maxmemory(container: Doc, conf: dict[str, str]) -> int:
    """Redis's maxmemory in bytes: the command line's, else redis.conf's."""
    args = container["args"]
    value = args[args.index("--maxmemory") + 1] if "--maxmemory" in args else conf["maxmemory"]
    return memory_bytes(value)


def tls_by_trigger(docs: list[Doc]) -> set[str]:
    return {
        t["metadata"].get("enableTLS", "false")
        for so in by_kind(docs)["ScaledObject"].values()
        for t in so["spec"]["triggers"]
    }


@pytest.mark.parametrize("overlay", IN_CLUSTER_REDIS)
def test_in_cluster_redis_keeps_an_append_only_file_on_a_volume(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = by_kind(docs)
    server = kinds["StatefulSet"]["redis"]
    (container,) = pod_spec(server)["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(server)["volumes"]}
    config_map = kinds["ConfigMap"][volumes["config"]["configMap"]["name"]]
    conf = redis_conf(config_map["data"]["redis.conf"])
    compose = redis_conf((DEPLOY / "redis.conf").read_text())
    for key in ("appendonly", "appendfsync", "maxmemory-policy"):
        assert conf[key] == compose[key], key
    assert (conf["appendonly"], conf["maxmemory-policy"]) == ("yes", "noeviction")
    assert container["args"][:2] == ["redis-server", "/etc/redis/redis.conf"]
    # The data directory is the PVC of the StatefulSet's claim template.
    (claim,) = server["spec"]["volumeClaimTemplates"]
    assert mounts[conf["dir"]] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert memory_bytes(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    # maxmemory (redis.conf or the command line's override) stays under the memory limit.
    limit = memory_bytes(container["resources"]["limits"]["memory"])
    assert redis_maxmemory(container, conf) < limit
    # The ACL file is the Secret swarm-redis-acl, mounted where redis.conf reads it.
    acl = Path(conf["aclfile"])
    assert mounts[str(acl.parent)] == "acl"
    assert volumes["acl"]["secret"] == {
        "secretName": "swarm-redis-acl",
        "items": [{"key": "users.acl", "path": acl.name}],
    }
    # Services and KEDA find it where the ConfigMap says, on the Service's port, without TLS.
    service = kinds["Service"]["redis"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(server))
    port = service["spec"]["ports"][0]["port"]
    assert config(docs)["REDIS_ADDRESS"] == f"redis.swarm.svc.cluster.local:{port}"
    assert port == int(conf["port"])
    assert tls_by_trigger(docs) == {"false"}


def test_external_redis_comes_from_secrets_over_tls() -> None:
    docs = rendered("prod-external-redis")
    kinds = by_kind(docs)
    assert "StatefulSet" not in kinds and "redis" not in kinds.get("Service", {})
    assert "REDIS_ADDRESS" not in config(docs)
    for vendor in VENDORS:
        env = env_of(pod_spec(kinds["Deployment"][f"worker-{vendor}"])["containers"][0])
        assert env["REDIS_ADDRESS"]["valueFrom"] == {
            "secretKeyRef": {"name": "swarm-keda-redis", "key": "address"}
        }
    assert tls_by_trigger(docs) == {"true"}
    redis_rule = kinds["NetworkPolicy"]["swarm-egress"]["spec"]["egress"][1]
    assert "podSelector" not in redis_rule["to"][0] and redis_port(docs) != 6379


# -- README "Deploy" agrees -----------------------------------------------------------------------
def readme_kubernetes() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("**Kubernetes.**")
    return text[start : text.index("**Redis Cluster.**", start)]


def test_readme_deploy_matches_the_manifests_on_tls_ports_and_commands() -> None:
    section = readme_kubernetes()
    for overlay in OVERLAYS:
        assert f"kubectl apply -k deploy/k8s/overlays/{overlay}" in section, overlay
    urls = set(re.findall(r"(rediss?)://[\w-]+:[^@\s]+@([\w.-]+):(\d+)/0", section))
    in_cluster = rendered("prod")
    host, port = config(in_cluster)["REDIS_ADDRESS"].rsplit(":", 1)
    external = rendered("prod-external-redis")
    assert {u for u in urls if u[0] == "redis"} == {("redis", host, port)}
    assert {(s, p) for s, _h, p in urls if s == "rediss"} == {("rediss", str(redis_port(external)))}
    # TLS: none in the cluster, on for the external Redis; the README says which.
    assert tls_by_trigger(in_cluster) == {"false"} and tls_by_trigger(external) == {"true"}
    assert 'enableTLS: "true"' in section and 'enableTLS: "false"' in section
    # Every Secret the manifests need is created in the README.
    for secret in set().union(*(required_secrets(rendered(o)) for o in OVERLAYS)):
        assert f"create secret generic {secret}" in section, secret


def required_secrets(docs: list[Doc]) -> set[str]:
    """Names of the Secrets the objects need (optional references left out)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef") or node.get("secret")
            if isinstance(ref, dict) and not ref.get("optional"):
                found.add(ref.get("name") or ref["secretName"])
            if "parameter" in node and "name" in node:  # a TriggerAuthentication's secretTargetRef
                found.add(node["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(docs)
    return found


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.parametrize("overlay", IN_CLUSTER_REDIS)
def test_the_redis_pod_config_runs_a_real_redis_with_the_readmes_acl_file(
    overlay: str, tmp_path: Path
) -> None:
    """The StatefulSet's redis.conf and arguments, in a private redis-server (paths moved from
    the pod's mounts to a temp folder), with the ACL file made as README "Deploy" says."""
    kinds = by_kind(rendered(overlay))
    (container,) = pod_spec(kinds["StatefulSet"]["redis"])["containers"]
    config_map = next(c for n, c in kinds["ConfigMap"].items() if n.startswith("redis-config"))
    conf = config_map["data"]["redis.conf"]
    conf = conf.replace("\ndir /data\n", f"\ndir {tmp_path}\n")
    conf = conf.replace("/etc/redis/acl/users.acl", str(tmp_path / "users.acl"))
    (tmp_path / "redis.conf").write_text(conf)
    secrets = {"swarm-admin": "pw-admin-k8s", "keda": "pw-keda-k8s"}
    res = subprocess.run(
        ["sh", str(DEPLOY / "redis" / "render-acl.sh")],
        env={"PATH": os.environ["PATH"], "SWARM_ACL_TEMPLATE": str(DEPLOY / "redis" / "users.acl"),
             "SWARM_ACL_FILE": str(tmp_path / "users.acl"),
             **{"REDIS_PASSWORD_" + u.upper().replace("-", "_"): p for u, p in secrets.items()}},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    port = free_port()
    args = [str(tmp_path / "redis.conf"), *container["args"][2:]]
    proc = subprocess.Popen(
        ["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        admin = redis.Redis(port=port, username="swarm-admin", password=secrets["swarm-admin"])
        deadline = time.monotonic() + 10
        while not _answers(admin):
            assert proc.poll() is None, "redis-server refused the pod's redis.conf"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        names = ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy")
        assert {k: admin.config_get(k)[k] for k in names} == {
            "appendonly": "yes",
            "appendfsync": "everysec",
            "maxmemory": str(redis_maxmemory(container, redis_conf(conf))),
            "maxmemory-policy": "noeviction",
        }
        admin.xadd("swarm:queue:claude", {"task_id": "t1"})
        assert any(tmp_path.glob("appendonlydir/*.aof")), "no append-only file in the PVC's dir"
        keda = redis.Redis(port=port, username="keda", password=secrets["keda"])
        assert keda.xlen("swarm:queue:claude") == 1
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        probe = " ".join(container["readinessProbe"]["exec"]["command"][2:])
        probe = probe.replace("redis-cli ping", f"redis-cli -p {port} ping")
        assert subprocess.run(["sh", "-c", probe], timeout=10, check=False).returncode == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False

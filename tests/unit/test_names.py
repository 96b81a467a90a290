"""Stream, group and key names: everything lives under one namespace."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from shared.protocol import DEFAULT_NAMESPACE, Names, Urgency
from shared.protocol.names import URGENCY_ORDER

KEY_PROPERTIES = (
    "intake", "rejected", "findings", "dead_letter", "members", "cooldowns", "totals", "shards",
    "cancels", "reroutes",
)  # fmt: skip
KEY_METHODS = (
    "vendor_tasks",
    "shard_queries",
    "replies",
    "member",
    "task",
    "route",
    "task_findings",
    "task_cancelled",
    "task_summary",
    "run_tasks",
    "run_info",
    "shard_head",
    "blob",
    "shard_reply",
)
PAIR_METHODS = ("rate_limit", "cooldown", "failures", "task_done")  # (vendor, model or task)
SPEND = "spend"  # (period, kind, name)
SHARD_VERSIONED = ("shard_version", "shard_cache")  # (shard, version)

NAMESPACES = ["swarm", "swarm2", "Swarm", "t0", "a", "a.b", "a-b", "a_b", "A.b-c_d", "x" * 64]


def _all_keys(names: Names, arg: str = "x1") -> dict[str, str]:
    keys = {attr: getattr(names, attr) for attr in KEY_PROPERTIES}
    keys.update({attr: getattr(names, attr)(arg) for attr in KEY_METHODS})
    keys.update({attr: getattr(names, attr)(arg, "m1") for attr in PAIR_METHODS})
    keys.update({attr: getattr(names, attr)(arg, 7) for attr in SHARD_VERSIONED})
    return keys


def test_the_key_lists_above_cover_every_name_names_can_build() -> None:
    # If Names grows a new key, these tests must learn about it.
    properties = {n for n, v in vars(Names).items() if isinstance(v, property)}
    methods = {
        n
        for n, v in vars(Names).items()
        if not n.startswith("_") and callable(v) and not isinstance(v, staticmethod)
    }
    assert properties == set(KEY_PROPERTIES)
    assert methods == set(KEY_METHODS) | set(PAIR_METHODS) | set(SHARD_VERSIONED) | {
        SPEND,
        "vendor_task_levels",
    }


def test_a_vendor_has_a_stream_per_urgency_most_urgent_first() -> None:
    names = Names()
    assert names.vendor_task_levels("deepseek") == (
        "swarm:queue:deepseek:critical",
        "swarm:queue:deepseek:high",
        "swarm:queue:deepseek",  # normal keeps the stream third-party workers know
        "swarm:queue:deepseek:low",
    )
    assert names.vendor_tasks("deepseek", "normal") == names.vendor_tasks("deepseek")
    assert sorted(URGENCY_ORDER) == sorted(u.value for u in Urgency)
    with pytest.raises(ValueError, match="urgency 'urgent' is not one of critical, high"):
        names.vendor_tasks("deepseek", "urgent")


def test_default_namespace_is_swarm() -> None:
    assert DEFAULT_NAMESPACE == "swarm"
    assert Names().namespace == "swarm"
    assert Names() == Names("swarm")


def test_default_stream_names_match_the_documented_ones() -> None:
    names = Names()
    assert names.intake == "swarm:tasks"
    assert names.findings == "swarm:findings"
    assert names.rejected == "swarm:tasks:rejected"
    assert names.dead_letter == "swarm:dlq"


def test_every_default_key_is_pinned() -> None:
    assert _all_keys(Names(), "x1") == {
        "intake": "swarm:tasks",
        "rejected": "swarm:tasks:rejected",
        "findings": "swarm:findings",
        "dead_letter": "swarm:dlq",
        "members": "swarm:members",
        "vendor_tasks": "swarm:queue:x1",
        "shard_queries": "swarm:shard:x1:queries",
        "replies": "swarm:replies:x1",
        "member": "swarm:member:x1",
        "task": "swarm:task:x1",
        "route": "swarm:route:x1",
        "task_findings": "swarm:findings:x1",
        "task_done": "swarm:done:x1:m1",  # (vendor, task id): the task id last
        "task_cancelled": "swarm:cancelled:x1",
        "cancels": "swarm:cancel",
        "reroutes": "swarm:reroutes",
        "rate_limit": "swarm:ratelimit:x1:m1",
        "cooldown": "swarm:cooldown:x1:m1",
        "cooldowns": "swarm:cooldowns",
        "failures": "swarm:failures:x1:m1",
        "totals": "swarm:totals",
        "shards": "swarm:shards",
        "task_summary": "swarm:collected:x1",
        "run_tasks": "swarm:run:x1",
        "run_info": "swarm:runinfo:x1",
        "shard_head": "swarm:shard:x1:head",
        "blob": "swarm:blob:x1",
        "shard_reply": "swarm:shard-reply:x1",
        "shard_version": "swarm:shard:x1:v:7",
        "shard_cache": "swarm:shard:x1:cache:7",
    }
    assert Names().spend(20417, "vendor", "claude") == "swarm:spend:20417:vendor:claude"


def test_consumer_group_names() -> None:
    assert Names.DISPATCHER_GROUP == "dispatcher"
    assert Names.COLLECTOR_GROUP == "collector"
    assert Names.MEGASHARD_GROUP == "megashard"
    assert Names.worker_group("claude") == "worker-claude"
    assert Names.worker_group("openai-compatible") == "worker-openai-compatible"


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("arg", ["x1", "claude", "a:b", "task_0123456789abcdef"])
def test_every_name_is_under_the_namespace(namespace: str, arg: str) -> None:
    names = Names(namespace)
    assert names.namespace == namespace
    for attr, key in _all_keys(names, arg).items():
        assert key.startswith(f"{namespace}:"), (attr, key)
        assert key.split(":", 1)[0] == namespace, (attr, key)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_names_within_one_namespace_are_distinct(namespace: str) -> None:
    keys = list(_all_keys(Names(namespace), "x1").values())
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(NAMESPACES, 2)))
def test_two_namespaces_never_produce_the_same_key(first: str, second: str) -> None:
    args = ["x1", "claude", "a:b", "tasks", first, second, f"{second}:tasks", f"{first}:tasks"]
    one = {key for arg in args for key in _all_keys(Names(first), arg).values()}
    other = {key for arg in args for key in _all_keys(Names(second), arg).values()}
    assert one.isdisjoint(other), sorted(one & other)


@pytest.mark.parametrize(
    "namespace",
    [
        "",
        " ",
        "a:b",
        "swarm:",
        "a b",
        " swarm",
        "-swarm",
        "_swarm",
        ".swarm",
        "x" * 65,
        "sw\u00e4rm",
        "a/b",
        "a*",
        "{swarm}",
        "swarm\n",
    ],
)
def test_invalid_namespaces_raise_a_clear_value_error(namespace: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(namespace))) as info:
        Names(namespace)
    message = str(info.value)
    assert "namespace" in message
    assert "1-64" in message
    assert "letters, digits" in message


@pytest.mark.parametrize("namespace", ["1", "x" * 64, "A.b-c_d", "swarm-prod.eu_1"])
def test_boundary_namespaces_are_accepted(namespace: str) -> None:
    assert Names(namespace).intake == f"{namespace}:tasks"


def test_namespace_cannot_be_changed_after_validation() -> None:
    names = Names("swarm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        names.namespace = "bad:namespace"  # type: ignore[misc]
    assert names.intake == "swarm:tasks"


def test_no_vendor_name_can_collide_with_an_intake_stream() -> None:
    names = Names()
    for vendor in ("rejected", "findings", "dlq"):
        assert names.vendor_tasks(vendor) not in {
            names.intake,
            names.rejected,
            names.findings,
            names.dead_letter,
        }


def test_no_task_id_can_name_another_tasks_key() -> None:
    names = Names()
    assert names.task("t:findings") != names.task_findings("t")
    assert names.task_findings("t") != names.findings

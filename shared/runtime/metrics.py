"""Every Prometheus metric of the swarm, declared in one place on an injected registry.

Labels are bounded (stream, group, outcome, reason kind, vendor, model); task ids,
entry ids and consumer names never become labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_GENAI_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
_GENAI_TOKEN_BUCKETS = tuple(4.0**i for i in range(14))  # 1, 4, 16, ... 67108864 (OTel advice)
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    published: Counter
    deliveries: Counter
    handle_seconds: Histogram
    in_flight: Gauge
    reclaimed: Counter
    dead_letters: Counter
    redis_errors: Counter
    trimmed: Counter
    capped: Counter
    rejected: Counter
    llm_requests: Counter
    llm_latency: Histogram
    llm_tokens: Counter
    llm_cost: Counter
    llm_unpriced: Counter
    genai_duration: Histogram
    genai_tokens: Histogram
    tasks: Counter
    retries: Counter
    ratelimit_wait: Histogram
    shard_queries: Counter
    shard_context_tokens: Gauge
    shard_cache_events: Counter
    shard_cache_tokens: Counter
    shard_cost: Counter
    collector_findings: Counter
    collector_tasks: Counter
    collector_tokens: Counter
    collector_cost: Counter
    stream_length: Gauge
    stream_lag: Gauge
    stream_pending: Gauge
    fleet_members: Gauge
    cooldown_active: Gauge
    budget_spent: Gauge
    budget_cap: Gauge
    budget_unpriced: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            published=Counter(
                "swarm_published_messages_total",
                "Entries added to a stream.",
                ["stream"],
                registry=reg,
            ),
            deliveries=Counter(
                "swarm_deliveries_total",
                "Deliveries finished, by outcome (acked, dead_lettered, failed, abandoned, "
                "fenced_off: its effects were already written by a peer, so dropped).",
                ["stream", "group", "outcome"],
                registry=reg,
            ),
            handle_seconds=Histogram(
                "swarm_handle_duration_seconds",
                "Time from delivery to outcome.",
                ["stream", "group"],
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            in_flight=Gauge(
                "swarm_in_flight_deliveries",
                "Deliveries being handled now.",
                ["stream", "group"],
                registry=reg,
            ),
            reclaimed=Counter(
                "swarm_reclaimed_entries_total",
                "Pending entries taken over, by cause (replay, idle, dead_consumer).",
                ["stream", "group", "cause"],
                registry=reg,
            ),
            dead_letters=Counter(
                "swarm_dead_letters_total",
                "Entries moved to a dead-letter or rejected stream.",
                ["stream", "reason"],
                registry=reg,
            ),
            redis_errors=Counter(
                "swarm_redis_errors_total",
                "Redis operations that failed and were retried.",
                ["operation"],
                registry=reg,
            ),
            trimmed=Counter(
                "swarm_trimmed_entries_total",
                "Handled entries trimmed from a stream.",
                ["stream"],
                registry=reg,
            ),
            capped=Counter(
                "swarm_capped_records_total",
                "Dead-letter and rejected records dropped by their stream's length cap "
                "(SWARM_DLQ_MAXLEN, SWARM_REJECTED_MAXLEN).",
                ["stream"],
                registry=reg,
            ),
            rejected=Counter(
                "swarm_rejected_tasks_total",
                "Intake entries rejected, by offending field.",
                ["field"],
                registry=reg,
            ),
            llm_requests=Counter(
                "swarm_llm_requests_total",
                "Vendor calls by outcome (ok, or the error kind: rate_limited, timeout, ...).",
                ["vendor", "model", "outcome"],
                registry=reg,
            ),
            llm_latency=Histogram(
                "swarm_llm_request_duration_seconds",
                "Vendor call latency.",
                ["vendor", "model"],
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            llm_tokens=Counter(
                "swarm_llm_tokens_total",
                "Tokens the vendors reported, by kind (input, output, cache_read, cache_write).",
                ["vendor", "model", "kind"],
                registry=reg,
            ),
            llm_cost=Counter(
                "swarm_llm_cost_usd_total",
                "Dollar cost of vendor calls, from reported usage.",
                ["vendor", "model"],
                registry=reg,
            ),
            llm_unpriced=Counter(
                "swarm_llm_unpriced_requests_total",
                "Vendor calls whose model is not in the price table (cost unknown, not $0).",
                ["vendor", "model"],
                registry=reg,
            ),
            # OpenTelemetry GenAI client metrics, under their Prometheus names and label keys.
            genai_duration=Histogram(
                "gen_ai_client_operation_duration_seconds",
                "GenAI operation duration (OTel gen_ai.client.operation.duration).",
                [
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_operation_name",
                    "error_type",
                ],
                buckets=_GENAI_DURATION_BUCKETS,
                registry=reg,
            ),
            genai_tokens=Histogram(
                "gen_ai_client_token_usage",
                "Tokens per GenAI operation (OTel gen_ai.client.token.usage).",
                [
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_operation_name",
                    "gen_ai_token_type",
                ],
                buckets=_GENAI_TOKEN_BUCKETS,
                registry=reg,
            ),
            tasks=Counter(
                "swarm_worker_tasks_total",
                "Tasks a worker finished, by outcome (done, rerouted, failed, duplicate).",
                ["vendor", "outcome"],
                registry=reg,
            ),
            retries=Counter(
                "swarm_llm_retries_total",
                "Vendor calls retried, by the error kind that caused the retry.",
                ["vendor", "model", "kind"],
                registry=reg,
            ),
            ratelimit_wait=Histogram(
                "swarm_ratelimit_wait_seconds",
                "Time a call waited for shared rate-limit capacity before it was sent.",
                ["vendor", "model"],
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            shard_queries=Counter(
                "swarm_shard_queries_total",
                "Context queries a shard finished, by outcome (answered, failed, expired, "
                "duplicate).",
                ["shard", "outcome"],
                registry=reg,
            ),
            shard_context_tokens=Gauge(
                "swarm_shard_context_tokens",
                "Tokens of context a shard holds (its current version, vendor-counted).",
                ["shard", "vendor", "model"],
                registry=reg,
            ),
            shard_cache_events=Counter(
                "swarm_shard_cache_events_total",
                "Vendor context-cache events (hit, miss, create, extend, delete, expired).",
                ["shard", "event"],
                registry=reg,
            ),
            shard_cache_tokens=Counter(
                "swarm_shard_cache_tokens_total",
                "Prompt tokens of shard queries, by kind (uncached, cache_read, cache_write).",
                ["shard", "kind"],
                registry=reg,
            ),
            shard_cost=Counter(
                "swarm_shard_cost_usd_total",
                "Dollar cost of a shard: queries, cache creation and cache storage.",
                ["shard", "kind"],
                registry=reg,
            ),
            collector_findings=Counter(
                "swarm_collector_findings_total",
                "Findings the collector took in, by outcome (stored, duplicate, superseded, "
                "redelivered).",
                ["outcome"],
                registry=reg,
            ),
            collector_tasks=Counter(
                "swarm_collector_tasks_total",
                "Tasks finished, as the collector counted them once each, by status.",
                ["vendor", "model", "status"],
                registry=reg,
            ),
            collector_tokens=Counter(
                "swarm_collector_tokens_total",
                "Tokens of collected findings, by kind (input, output, cache_read, cache_write).",
                ["vendor", "model", "kind"],
                registry=reg,
            ),
            collector_cost=Counter(
                "swarm_collector_cost_usd_total",
                "Dollar cost of collected findings.",
                ["vendor", "model"],
                registry=reg,
            ),
            # Backlog, as each consumer sees its own stream and group (XLEN, XINFO GROUPS).
            stream_length=Gauge(
                "swarm_stream_length",
                "Entries in a stream (handled ones are kept for the retention time).",
                ["stream"],
                registry=reg,
            ),
            stream_lag=Gauge(
                "swarm_stream_lag",
                "Entries of a stream not yet delivered to a consumer group (Redis 7 lag).",
                ["stream", "group"],
                registry=reg,
            ),
            stream_pending=Gauge(
                "swarm_stream_pending",
                "Entries delivered to a consumer group and not yet acknowledged.",
                ["stream", "group"],
                registry=reg,
            ),
            # The fleet as the dispatcher reads it (every SWARM_DISPATCHER_FLEET_REFRESH_S).
            fleet_members=Gauge(
                "swarm_fleet_live_members",
                "Live members (heartbeat not expired) by service and vendor or shard.",
                ["service", "vendor"],
                registry=reg,
            ),
            cooldown_active=Gauge(
                "swarm_vendor_cooldown_active",
                "1 while a vendor/model is cooling down after repeated failures.",
                ["vendor", "model"],
                registry=reg,
            ),
            budget_spent=Gauge(
                "swarm_budget_spent_usd",
                "USD spent this budget period by a capped vendor or task type.",
                ["kind", "name"],
                registry=reg,
            ),
            budget_cap=Gauge(
                "swarm_budget_cap_usd",
                "The period cap of a vendor or task type (SWARM_DISPATCHER_*_CAPS_USD).",
                ["kind", "name"],
                registry=reg,
            ),
            budget_unpriced=Gauge(
                "swarm_budget_unpriced_findings",
                "Findings of unpriced models this budget period by a capped vendor or task "
                "type: their cost is unknown, so not in swarm_budget_spent_usd.",
                ["kind", "name"],
                registry=reg,
            ),
        )

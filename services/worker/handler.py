"""What a worker does with one task: ask a shard for context if the task wants it, wait for
shared rate-limit capacity, call the vendor with retries, and decide the outcome.

Business logic only: no Redis here. Everything shared between replicas (rate limits,
cooldowns, context queries) comes in through the small protocols below.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from services.worker.settings import WorkerSettings
from shared.llm.accounting import account, account_error
from shared.llm.backoff import backoff_s
from shared.llm.base import LLMClient
from shared.llm.errors import (
    AuthError,
    ContextTooLongError,
    FatalLLMError,
    LLMError,
    QuotaExceededError,
    RetryableLLMError,
)
from shared.llm.prices import PriceTable, estimate_tokens
from shared.llm.semconv import traced_complete
from shared.llm.types import LLMRequest, LLMResponse
from shared.protocol import KNOWN_VENDORS, AttemptRecord, ContextReply, Finding, Status, Task
from shared.protocol.tracecontext import TraceContext, trace_of
from shared.runtime.metrics import Metrics
from shared.runtime.tracing import Tracer

log = structlog.get_logger("swarm.worker")

# Fatal errors that say "not this vendor" rather than "not this task": try another vendor.
_FALL_BACK_ON = (ContextTooLongError, AuthError, QuotaExceededError)


class Limiter(Protocol):
    async def acquire(self, tokens: int = 0, *, deadline: float | None = None) -> float: ...
    async def settle(self, estimated: int, actual: int) -> None: ...


class CooldownBook(Protocol):
    async def failure(self, vendor: str, model: str) -> bool: ...
    async def success(self, vendor: str, model: str) -> None: ...


class SpendLedger(Protocol):
    async def record(self, vendor: str, task_type: str, cost_usd: float | None) -> None: ...


class ContextSource(Protocol):
    async def ask(
        self,
        target: str,
        query: str,
        *,
        max_response_tokens: int = 2048,
        task_id: str | None = None,
        timeout_s: float = 30.0,
        trace: TraceContext | None = None,
    ) -> ContextReply: ...


async def _quietly(step: Awaitable[object], what: str) -> None:
    """Run a bookkeeping step whose failure must not fail the task (logged, not raised)."""
    try:
        await step
    except Exception as exc:  # e.g. Redis briefly away: the next call corrects the books
        log.warning("bookkeeping.failed", step=what, error=str(exc))


@dataclass(frozen=True, slots=True)
class Done:
    finding: Finding


@dataclass(frozen=True, slots=True)
class Reroute:
    """Back to the dispatcher with this vendor excluded and the attempt history kept."""

    task: Task
    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No vendor left (or none allowed): a failed finding, and the task dead-lettered."""

    finding: Finding
    reason: str


Outcome = Done | Reroute | GiveUp


@dataclass(slots=True)
class Worker:
    worker_id: str
    vendor: str
    llm: LLMClient
    limiter: Limiter | None
    cooldowns: CooldownBook
    context: ContextSource | None
    prices: PriceTable
    metrics: Metrics
    settings: WorkerSettings
    spend: SpendLedger | None = None
    tracer: Tracer = field(default_factory=Tracer)

    async def run(self, task: Task, *, may_reroute: bool = True) -> Outcome:
        """The task's outcome; a failure that another vendor could serve is a Reroute only
        if `may_reroute` (the dispatcher routed the task here), else a GiveUp."""
        started = time.monotonic()
        deadline = started + self.settings.task_deadline_s
        model = task.model or task.route_model or self.llm.default_model
        shard_text, sources = await self._shard_context(task)
        context = "\n\n".join(t for t in (task.context, shard_text) if t) or None
        request = LLMRequest(
            prompt=task.prompt,
            model=model,
            context=context,
            max_output_tokens=task.max_output_tokens or self.settings.max_output_tokens,
        )
        estimate = estimate_tokens(task.prompt + (context or "")) + request.max_output_tokens
        attempt = 0
        while True:
            attempt += 1
            if self.limiter is not None:
                waited = await self.limiter.acquire(estimate, deadline=deadline)
                self.metrics.ratelimit_wait.labels(self.vendor, model).observe(waited)
            call_started = time.monotonic()
            try:
                response = await traced_complete(
                    self.tracer,
                    self.llm,
                    self.vendor,
                    request,
                    trace_of(task.headers),
                    task_id=task.task_id,
                )
            except LLMError as exc:
                account_error(self.metrics, exc, time.monotonic() - call_started)
                if isinstance(exc, RetryableLLMError):
                    await _quietly(self.cooldowns.failure(self.vendor, model), "cooldown.failure")
                if self.limiter is not None:
                    await _quietly(self.limiter.settle(estimate, 0), "ratelimit.settle")
                wait = self._retry_wait(exc, attempt, deadline)
                if wait is None:
                    return self._fall_back(
                        task, model, exc, attempt, started, may_reroute=may_reroute
                    )
                self.metrics.retries.labels(self.vendor, model, exc.kind).inc()
                log.info("vendor.retry", attempt=attempt, kind=exc.kind, wait_s=round(wait, 2))
                await asyncio.sleep(wait)
                continue
            # The vendor has answered and been paid: bookkeeping trouble must not waste that.
            await _quietly(self.cooldowns.success(self.vendor, model), "cooldown.success")
            if self.limiter is not None:
                await _quietly(
                    self.limiter.settle(estimate, response.usage.total_tokens), "ratelimit.settle"
                )
            finding = self._finding(task, response, sources, attempt, started)
            # An unpriced finding (cost None) is counted apart, never as $0.
            if self.spend is not None and finding.cost_usd != 0:
                await _quietly(
                    self.spend.record(self.vendor, task.task_type, finding.cost_usd), "spend"
                )
            return Done(finding)

    def _retry_wait(self, exc: LLMError, attempt: int, deadline: float) -> float | None:
        if isinstance(exc, FatalLLMError) or attempt >= self.settings.max_attempts:
            return None
        wait = backoff_s(
            attempt,
            base_s=self.settings.backoff_base_s,
            max_s=self.settings.backoff_max_s,
            retry_after_s=exc.retry_after,
        )
        return None if time.monotonic() + wait > deadline else wait

    async def _shard_context(self, task: Task) -> tuple[str, tuple[str, ...]]:
        if not task.parent_shard or self.context is None:
            return "", ()
        try:
            reply = await self.context.ask(
                task.parent_shard,
                task.prompt,
                task_id=task.task_id,
                timeout_s=self.settings.context_timeout_s,
                trace=trace_of(task.headers),
            )
        except Exception as exc:  # context enriches the task; without it the task still runs
            log.warning("context.unavailable", shard=task.parent_shard, error=str(exc))
            return "", ()
        return reply.answer, tuple(f"{reply.shard_id}:{s}" for s in reply.sources)

    def _finding(
        self, task: Task, res: LLMResponse, sources: tuple[str, ...], attempt: int, started: float
    ) -> Finding:
        cost = account(self.metrics, self.prices, res, requested_model=task.model)
        code = res.extra.get("code")
        return Finding(
            task_id=task.task_id,
            worker_id=self.worker_id,
            vendor=self.vendor,
            model=res.model,
            summary=res.text,
            code=code,
            sources=sources,
            confidence=res.confidence,
            input_tokens=res.usage.input_tokens,
            output_tokens=res.usage.output_tokens,
            cache_read_tokens=res.usage.cache_read_tokens,
            cache_write_tokens=res.usage.cache_write_tokens,
            cost_usd=cost,
            latency_ms=(time.monotonic() - started) * 1000,
            attempt=attempt,
            task_type=task.task_type,
            run_id=task.run_id,
            intake_id=task.intake_id,
            headers=task.headers,
        )

    def _fall_back(
        self,
        task: Task,
        model: str,
        exc: LLMError,
        attempts: int,
        started: float,
        *,
        may_reroute: bool,
    ) -> Outcome:
        record = AttemptRecord(
            vendor=self.vendor, model=model, error=str(exc), retryable=exc.retryable
        )
        history = (*task.history, record)
        excluded = tuple(dict.fromkeys((*task.excluded_vendors, self.vendor)))
        pinned = task.vendor is not None or task.model is not None
        left = [v for v in KNOWN_VENDORS if v not in excluded]
        can_move = isinstance(exc, (RetryableLLMError, *_FALL_BACK_ON))
        fits = can_move and not pinned and left and len(history) <= self.settings.max_reroutes
        if fits and may_reroute:
            moved = task.model_copy(
                update={
                    "route_model": None,
                    "attempt": task.attempt + 1,
                    "excluded_vendors": excluded,
                    "history": history,
                }
            )
            return Reroute(moved, f"{exc.kind} after {attempts} attempt(s) on {self.vendor}")
        why = "; ".join(f"{h.vendor}: {h.error}" for h in history)
        if pinned and can_move:
            why += " (the task pins its vendor or model, so no other vendor may take it)"
        elif fits:
            why += (
                f" (the dispatcher did not route the task to {self.vendor}, so it cannot hand "
                "it to another vendor)"
            )
        failed = Finding(
            task_id=task.task_id,
            worker_id=self.worker_id,
            vendor=self.vendor,
            model=model,
            status=Status.FAILED,
            error=why,
            attempt=attempts,
            task_type=task.task_type,
            run_id=task.run_id,
            intake_id=task.intake_id,
            headers=task.headers,
            latency_ms=(time.monotonic() - started) * 1000,
        )
        return GiveUp(failed, why)

"""One shard answering context queries from its current context version.

The context comes from the store (never from the asker). Gemini reads it from an explicit
cache entry (see `cache`); Claude gets it as a system block with `cache_control`, so
after the first query it is read from Anthropic's prompt cache at a tenth of the price.
Each reply carries what it cost: the call (uncached input, cache reads and writes, output)
plus, for Gemini, the cache creation it triggered and the storage accrued since the
previous query. Its `sources` are the documents (and lines) the answer names, kept only if
this version holds them (see `corpus.read_sources`); the rest are logged and counted in the
heartbeat's `sources_dropped`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from services.megashard.cache import CacheUse, ExplicitCacheClient, GeminiContextCache
from services.megashard.corpus import SYSTEM_PROMPT, line_count, read_sources
from services.megashard.settings import ShardSettings
from services.megashard.store import ContextStore, Manifest, MissingContext
from shared.llm.accounting import account, account_error
from shared.llm.backoff import backoff_s
from shared.llm.base import LLMClient
from shared.llm.errors import BadRequestError, LLMError
from shared.llm.prices import PriceTable, cache_storage_usd, price_usage
from shared.llm.semconv import traced_complete
from shared.llm.settings import MissingCredentialsError
from shared.llm.types import LLMRequest, LLMResponse, Usage
from shared.protocol import ContextQuery, ContextReply, Status
from shared.protocol.tracecontext import trace_of
from shared.runtime.metrics import Metrics
from shared.runtime.tracing import Tracer

log = structlog.get_logger("swarm.megashard")

ClientFactory = Callable[[str, str], LLMClient]  # (vendor, model) -> client
CacheFactory = Callable[[ExplicitCacheClient, str], GeminiContextCache]  # (client, model)


class NoContext(Exception):
    """The shard has no context loaded."""


@dataclass(frozen=True, slots=True)
class Loaded:
    manifest: Manifest
    context: str
    lines: Mapping[str, int]  # each document the version holds -> its number of lines


@dataclass(frozen=True, slots=True)
class Answer:
    response: LLMResponse
    usage: Usage  # the call's usage, plus a cache creation this query triggered
    cost_usd: float | None


class Shard:
    def __init__(
        self,
        shard_id: str,
        *,
        store: ContextStore,
        clients: ClientFactory,
        caches: CacheFactory,
        prices: PriceTable,
        metrics: Metrics,
        settings: ShardSettings,
        tracer: Tracer | None = None,
    ) -> None:
        self.shard_id = shard_id
        self._tracer = tracer or Tracer()
        self._store = store
        self._clients = clients
        self._caches = caches
        self._prices = prices
        self._metrics = metrics
        self._settings = settings
        self._loaded: Loaded | None = None
        self._checked = float("-inf")
        self._lock = asyncio.Lock()
        self._llm: dict[tuple[str, str], LLMClient] = {}
        self._cache: dict[tuple[str, str], GeminiContextCache] = {}
        self._uncacheable: set[int] = set()  # versions too small for an explicit cache
        self.sources_dropped = 0  # sources answers named that this shard does not hold

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    def info(self) -> dict[str, str]:
        """Heartbeat fields: what this replica serves now."""
        loaded = self._loaded
        if loaded is None:
            return {"shard_id": self.shard_id, "loaded_tokens": "0", "version": "0"}
        m = loaded.manifest
        return {
            "shard_id": self.shard_id,
            "specialty": m.specialty,
            "vendor": m.vendor,
            "model": m.model,
            "window": str(m.window),
            "loaded_tokens": str(m.tokens),
            "version": str(m.version),
            "documents": str(len(m.documents)),
            "sources_dropped": str(self.sources_dropped),
        }

    async def current(self) -> Loaded:
        """The context to answer from: the head version, re-read when it moves."""
        now = time.monotonic()
        if self._loaded is not None and now - self._checked < self._settings.version_check_s:
            return self._loaded
        version = await self._store.version(self.shard_id)
        self._checked = now
        if version is None:
            raise NoContext(
                f"shard {self.shard_id!r} has no context loaded; "
                f"run: swarm shard load {self.shard_id} PATHS..."
            )
        if self._loaded is not None and self._loaded.manifest.version == version:
            return self._loaded
        async with self._lock:
            if self._loaded is None or self._loaded.manifest.version != version:
                manifest = await self._store.manifest(self.shard_id, version)
                docs = await self._store.documents(manifest)
                context = self._store.rendered(manifest, docs)
                lines = {d.name: line_count(d.text) for d in docs}
                previous, self._loaded = self._loaded, Loaded(manifest, context, lines)
                self._metrics.shard_context_tokens.labels(
                    self.shard_id, manifest.vendor, manifest.model
                ).set(manifest.tokens)
                log.info(
                    "shard.context_loaded",
                    version=version,
                    tokens=manifest.tokens,
                    documents=len(manifest.documents),
                    vendor=manifest.vendor,
                    model=manifest.model,
                )
                if previous is not None and previous.manifest.vendor == "gemini":
                    old = previous.manifest
                    await self._gemini_cache(old.vendor, old.model).drop(old.version)
        assert self._loaded is not None
        return self._loaded

    async def answer(self, query: ContextQuery) -> ContextReply:
        """The reply to `query`: `ok` with the answer, or `failed` with the reason."""
        started = time.monotonic()
        try:
            loaded = await self.current()
            result = await self._answer_with_retries(loaded, query)
        except (NoContext, MissingContext, LLMError, MissingCredentialsError) as exc:
            outcome = "failed"
            self._metrics.shard_queries.labels(self.shard_id, outcome).inc()
            m = self._loaded.manifest if self._loaded else None
            return ContextReply(
                query_id=query.query_id,
                shard_id=self.shard_id,
                vendor=m.vendor if m else "none",
                model=m.model if m else "",
                status=Status.FAILED,
                error=str(exc),
                latency_ms=(time.monotonic() - started) * 1000,
            )
        u, m = result.usage, loaded.manifest
        self._metrics.shard_queries.labels(self.shard_id, "answered").inc()
        sources = read_sources(result.response.text, loaded.lines)
        if sources.dropped:
            self.sources_dropped += len(sources.dropped)
            log.warning(
                "shard.sources_dropped",
                dropped=list(sources.dropped),
                note="the answer named documents this shard does not hold",
            )
        for kind, tokens in (
            ("uncached", u.input_tokens),
            ("cache_read", u.cache_read_tokens),
            ("cache_write", u.cache_write_tokens),
        ):
            if tokens:
                self._metrics.shard_cache_tokens.labels(self.shard_id, kind).inc(tokens)
        return ContextReply(
            query_id=query.query_id,
            shard_id=self.shard_id,
            vendor=m.vendor,
            model=result.response.model,
            answer=result.response.text,
            sources=sources.kept,
            context_tokens_searched=m.tokens,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cost_usd=result.cost_usd,
            latency_ms=(time.monotonic() - started) * 1000,
        )

    async def _answer_with_retries(self, loaded: Loaded, query: ContextQuery) -> Answer:
        s = self._settings
        attempt = 1
        while True:
            try:
                return await self._call(loaded, query)
            except LLMError as exc:
                account_error(self._metrics, exc)
                if not exc.retryable or attempt >= s.max_attempts:
                    raise
                wait = backoff_s(
                    attempt,
                    base_s=s.backoff_base_s,
                    max_s=s.backoff_max_s,
                    retry_after_s=exc.retry_after,
                )
                if query.deadline is not None:
                    left = (query.deadline - datetime.now(UTC)).total_seconds()
                    if wait >= left:
                        raise
                log.warning("shard.retry", attempt=attempt, error=str(exc), wait_s=round(wait, 2))
                await asyncio.sleep(wait)
                attempt += 1

    async def _call(self, loaded: Loaded, query: ContextQuery) -> Answer:
        m = loaded.manifest
        llm = self._client(m.vendor, m.model)
        max_tokens = min(query.max_response_tokens, self._settings.max_answer_tokens)
        if m.vendor != "gemini":
            request = LLMRequest(
                prompt=query.query,
                model=m.model,
                system=SYSTEM_PROMPT,
                context=loaded.context,
                cache_ttl=self._settings.claude_cache_ttl,
                max_output_tokens=max_tokens,
            )
            response = await self._complete(llm, m.vendor, request, query)
            return Answer(response, response.usage, self._account(response))
        return await self._call_gemini(llm, loaded, query, max_tokens)

    async def _complete(
        self, llm: LLMClient, vendor: str, request: LLMRequest, query: ContextQuery
    ) -> LLMResponse:
        parent = trace_of(query.headers)
        return await traced_complete(
            self._tracer, llm, vendor, request, parent, task_id=query.task_id
        )

    async def _call_gemini(
        self, llm: LLMClient, loaded: Loaded, query: ContextQuery, max_tokens: int
    ) -> Answer:
        m, question = loaded.manifest, query.query
        cache = self._gemini_cache(m.vendor, m.model)
        for _ in range(2):  # a second go only when the entry vanished under us
            use: CacheUse | None = None
            if m.version not in self._uncacheable:
                try:
                    use = await cache.use(m.version, loaded.context)
                except BadRequestError as exc:  # e.g. below the model's minimum cache size
                    log.info("shard.cache_unavailable", version=m.version, reason=str(exc))
                    self._uncacheable.add(m.version)
            if use is None:
                request = LLMRequest(
                    prompt=question,
                    model=m.model,
                    system=SYSTEM_PROMPT,
                    context=loaded.context,
                    max_output_tokens=max_tokens,
                )
            else:
                request = LLMRequest(
                    prompt=question,
                    model=m.model,
                    cached_content=use.name,
                    max_output_tokens=max_tokens,
                )
            try:
                response = await self._complete(llm, m.vendor, request, query)
            except LLMError as exc:
                if use is not None and exc.status == 404:
                    await cache.invalidate(m.version, use.name)
                    continue
                raise
            return self._gemini_answer(response, use)
        raise BadRequestError(
            "the context cache vanished twice in a row", vendor=m.vendor, model=m.model
        )

    def _gemini_answer(self, response: LLMResponse, use: CacheUse | None) -> Answer:
        cost = self._account(response)
        usage = response.usage
        if use is None:
            return Answer(response, usage, cost)
        shard = self.shard_id
        if use.created_tokens:
            creation = Usage(cache_write_tokens=use.created_tokens)
            write_cost = price_usage(self._prices, response.model, creation)
            usage = Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=use.created_tokens,
            )
            cost = None if cost is None or write_cost is None else cost + write_cost
            if write_cost is not None:
                self._metrics.shard_cost.labels(shard, "cache_write").inc(write_cost)
        price = self._prices.get(response.model)
        storage = cache_storage_usd(price, use.tokens, use.storage_s) if price else None
        if storage is not None:
            self._metrics.shard_cost.labels(shard, "cache_storage").inc(storage)
            cost = None if cost is None else cost + storage
        elif use.storage_s > 0:
            log.warning("shard.storage_unpriced", model=response.model, note="cost excludes it")
        return Answer(response, usage, cost)

    def _account(self, response: LLMResponse) -> float | None:
        cost = account(self._metrics, self._prices, response)
        if cost is not None:
            self._metrics.shard_cost.labels(self.shard_id, "query").inc(cost)
        return cost

    def _client(self, vendor: str, model: str) -> LLMClient:
        key = (vendor, model)
        if key not in self._llm:
            self._llm[key] = self._clients(vendor, model)
        return self._llm[key]

    def _gemini_cache(self, vendor: str, model: str) -> GeminiContextCache:
        key = (vendor, model)
        if key not in self._cache:
            client = self._client(vendor, model)
            self._cache[key] = self._caches(client, model)  # type: ignore[arg-type]
        return self._cache[key]

    async def aclose(self) -> None:
        for client in self._llm.values():
            await client.aclose()
        self._llm.clear()

"""State every vendor module shares: config, the seeded RNG, caches, stats, and the
waiting rules of one generation request (see `faults` for the rules themselves)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

from services.simulator.caching import AnthropicCache, GeminiCacheStore, PrefixCache
from services.simulator.config import Profile, SimulatorConfig
from services.simulator.faults import Plan, plan
from services.simulator.http import Hangup
from services.simulator.stats import Stats


class SimContext:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.anthropic_cache = AnthropicCache()
        self.prefix_cache = PrefixCache()
        self.gemini_caches = GeminiCacheStore()
        self.stats = Stats()

    def profile(self, vendor: str, model: str) -> Profile:
        return self.config.profile(vendor, model)

    def plan(self, profile: Profile, body: bytes) -> Plan:
        chosen = plan(profile, body, self.rng)
        if chosen.fault is not None:
            self.stats.faults[chosen.fault] += 1
        return chosen

    def reset(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.anthropic_cache.clear()
        self.prefix_cache.clear()
        self.gemini_caches.clear()
        in_flight = self.stats.in_flight
        self.stats = Stats()
        self.stats.in_flight = in_flight

    # -- waiting

    @staticmethod
    async def forced_wait(chosen: Plan) -> None:
        """A [[sim:latency=...]] marker delays errors too."""
        if chosen.latency_forced and chosen.latency_s > 0:
            await asyncio.sleep(chosen.latency_s)

    async def before_error(self, chosen: Plan, profile: Profile) -> Hangup | None:
        """Wait as an injected fault should; a Hangup means: never answer."""
        await self.forced_wait(chosen)
        if chosen.fault == "timeout":
            await asyncio.sleep(profile.timeout_hang_s)
            return Hangup()
        return None

    async def before_first_byte(
        self, chosen: Plan, streaming: bool, prefill_s: float = 0.0
    ) -> float:
        """Sleep until the first byte is due (the prompt's prefill comes first, whole);
        returns the latency left for a stream's chunks."""
        latency = chosen.latency_s
        first = latency * self.config.stream_first_byte_share if streaming else latency
        if first + prefill_s > 0:
            await asyncio.sleep(first + prefill_s)
        return latency - first


async def paced(chunks: list[tuple[bytes, bool]], spread_s: float) -> AsyncIterator[bytes]:
    """Yield SSE chunks; `spread_s` is shared out as pauses before the content chunks
    (those flagged True), like tokens arriving at a steady rate."""
    content = sum(1 for _, is_content in chunks if is_content)
    gap = spread_s / content if content else 0.0
    for chunk, is_content in chunks:
        if is_content and gap > 0:
            await asyncio.sleep(gap)
        yield chunk


def request_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]

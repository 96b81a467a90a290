"""The Redis Streams bus: publish, and deliveries with ack / dead-letter."""

from shared.bus.bus import Bus
from shared.bus.context import ServiceContext, service_context
from shared.bus.context_client import ContextClient, ContextUnavailable
from shared.bus.cooldown import Cooldowns
from shared.bus.delivery import (
    DeadLetter,
    Delivery,
    Effect,
    Fence,
    Outgoing,
    SetFields,
    SetKey,
)
from shared.bus.membership import Heartbeat, live_members
from shared.bus.ratelimit import RateLimiter, RateLimitTimeout
from shared.bus.serve import Handler, ServeStats, serve
from shared.bus.subscription import Subscription, ensure_group, trim_handled

__all__ = [
    "Bus",
    "ContextClient",
    "ContextUnavailable",
    "Cooldowns",
    "DeadLetter",
    "Delivery",
    "Effect",
    "Fence",
    "Handler",
    "Heartbeat",
    "Outgoing",
    "RateLimitTimeout",
    "RateLimiter",
    "ServeStats",
    "ServiceContext",
    "SetFields",
    "SetKey",
    "Subscription",
    "ensure_group",
    "live_members",
    "serve",
    "service_context",
    "trim_handled",
]

"""The Redis Streams bus: publish, and deliveries with ack / dead-letter."""

from shared.bus.bus import Bus
from shared.bus.context import ServiceContext, service_context
from shared.bus.delivery import DeadLetter, Delivery, Outgoing
from shared.bus.membership import Heartbeat, live_members
from shared.bus.serve import Handler, ServeStats, serve
from shared.bus.subscription import Subscription, ensure_group, trim_handled

__all__ = [
    "Bus",
    "DeadLetter",
    "Delivery",
    "Handler",
    "Heartbeat",
    "Outgoing",
    "ServeStats",
    "ServiceContext",
    "Subscription",
    "ensure_group",
    "live_members",
    "serve",
    "service_context",
    "trim_handled",
]

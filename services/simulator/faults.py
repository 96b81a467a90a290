"""What happens to one generation request: which fault (if any) and how long it waits.

Markers anywhere in the request body win over the configured rates:

    [[sim:429]] [[sim:500]] [[sim:503]] [[sim:529]]   that status (529 is 503 off Anthropic)
    [[sim:timeout]]                                   accept, never answer (timeout_hang_s)
    [[sim:context]]                                   the vendor's context-too-long error
    [[sim:quota]]                                     429 for exhausted quota
    [[sim:latency=2.5]]                               wait 2.5 s instead of the distribution

Latency: a success waits the sampled latency (streams spread it over the chunks); a marker
latency also delays injected errors, a sampled one does not (vendors refuse fast).
Each request draws the same number of random values whatever happens, so one seed
replays one sequence of outcomes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from services.simulator.config import Profile

FAULTS = ("429", "500", "503", "529", "timeout", "context", "quota")
_ALIASES = {"insufficient_quota": "quota", "overloaded": "529", "rate_limit": "429"}
_MARKER = re.compile(rb"\[\[sim:([a-z0-9_]+)(?:=([0-9]+(?:\.[0-9]*)?))?\]\]")


@dataclass(frozen=True, slots=True)
class Plan:
    fault: str | None
    latency_s: float
    latency_forced: bool  # a [[sim:latency=...]] marker: applies to errors too


def scan(body: bytes) -> tuple[str | None, float | None]:
    """(fault marker, latency marker) found in a request body."""
    if b"[[sim:" not in body:
        return None, None
    fault: str | None = None
    latency: float | None = None
    for match in _MARKER.finditer(body):
        name = match.group(1).decode()
        name = _ALIASES.get(name, name)
        if name == "latency" and match.group(2) is not None:
            latency = float(match.group(2))
        elif name in FAULTS and fault is None:
            fault = name
    return fault, latency


def plan(profile: Profile, body: bytes, rng: random.Random) -> Plan:
    draw = rng.random()
    sampled = profile.latency.sample(rng)
    marked_fault, marked_latency = scan(body)
    fault = marked_fault
    if fault is None:
        edge = 0.0
        for name, rate in profile.faults.table():
            edge += rate
            if draw < edge:
                fault = name
                break
    if marked_latency is not None:
        return Plan(fault, marked_latency, True)
    return Plan(fault, sampled, False)

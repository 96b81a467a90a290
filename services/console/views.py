"""The console's HTML: plain server-rendered pages; live sections are re-rendered by the
same functions and sent over server-sent events (static/console.js swaps them in)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from services.console.data import FleetRow, Page, RecordRow, StreamRow, TaskPage, TaskRow
from services.console.window import WindowRow
from shared.bus.findings import UNPRICED

FINISHED = ("ok", "failed", "cancelled")


def h(value: object) -> str:
    return escape(str(value), quote=True)


def _when(entry_id: str) -> str:
    try:
        ms = int(entry_id.split("-", maxsplit=1)[0])
    except ValueError:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _stamp(key: str, value: str) -> str:
    """A `..._at` field in unix seconds, as UTC time; anything else as it is."""
    if not key.endswith("_at"):
        return value
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return value


def _usd(raw: float | str | None) -> str:
    if raw is None or raw in ("", UNPRICED):
        return "unpriced"
    value = float(raw)
    return f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], empty: str, cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not body:
        return f'<p class="empty">{h(empty)}</p>'
    cols = "".join(f"<th>{h(c)}</th>" for c in head)
    return f'<table class="{cls}"><thead><tr>{cols}</tr></thead><tbody>{body}</tbody></table>'


def task_link(task_id: str) -> str:
    return f'<a class="task-link" href="/task/{quote(task_id, safe="")}">{h(task_id)}</a>'


# -- the page frame --------------------------------------------------------------------------


def page(
    title: str, body: str, *, namespace: str, read_only: bool, events: str | None = None
) -> str:
    banner = (
        '<p id="read-only" class="banner">Read-only: this console has no token '
        "(SWARM_CONSOLE_TOKEN), so replay and cancel are off.</p>"
        if read_only
        else '<form id="token-form" class="token"><label>Console token '
        '<input id="token" type="password" autocomplete="off" placeholder="needed to cancel '
        'or replay"></label> <button type="submit">Use</button> <span id="token-state">'
        "</span></form>"
    )
    live = f' data-events="{h(events)}"' if events else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} · swarm {h(namespace)}</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script></head>
<body{live} data-read-only="{"1" if read_only else "0"}">
<header><strong>swarm console</strong> <span class="ns">namespace {h(namespace)}</span>
<nav><a href="/">Overview</a> <a href="/tasks">Tasks</a>
<a href="/records/dlq">Dead letters</a> <a href="/records/rejected">Rejected</a></nav>
<form class="find" action="/find" method="get"><input name="task_id" placeholder="task id">
<button>Open</button></form>
<span id="live" class="live">{"connecting…" if events else ""}</span></header>
{banner}
<p id="flash" role="status"></p>
<main>{body}</main></body></html>"""


# -- overview sections -----------------------------------------------------------------------


def fleet_section(rows: list[FleetRow]) -> str:
    def note(r: FleetRow) -> str:
        if not r.unconfigured:
            return ""
        what = " or ".join(r.missing) or "its vendor's key"
        return h(f"{r.unconfigured} not configured (set {what})")

    return _table(
        ["Service", "Vendor / shard", "Models", "Live", "In flight", "Capacity", ""],
        (
            [
                h(r.service),
                h(r.name or "-"),
                h(", ".join(r.models) or "-"),
                str(r.replicas),
                str(r.in_flight),
                str(r.capacity or "-"),
                note(r),
            ]
            for r in rows
        ),
        "No live services (start some: swarm up, or swarm run SERVICE).",
        "fleet",
    )


def streams_section(rows: list[StreamRow]) -> str:
    def groups(s: StreamRow) -> str:
        return (
            "<br>".join(
                h(f"{g.group}: {g.pending:,} pending, lag {'?' if g.lag is None else f'{g.lag:,}'}")
                + h(f", {g.consumers} consumer{'s' if g.consumers != 1 else ''}")
                for g in s.groups
            )
            or "-"
        )

    return _table(
        ["Stream", "Length", "Groups (backlog)"],
        ([h(s.stream), f"{s.length:,}", groups(s)] for s in rows),
        "No streams yet.",
        "streams",
    )


def cost_section(rows: list[WindowRow], *, caught_up: bool, window_s: float) -> str:
    span = f"{window_s / 3600:g} h" if window_s >= 3600 else f"{window_s / 60:g} min"
    table = _table(
        ["Vendor / model", "Findings", "Failed", "Tokens in", "Tokens out", "Cost"],
        (
            [
                h(f"{r.vendor}/{r.model}"),
                f"{r.usage.findings:,}",
                f"{r.usage.failed:,}",
                f"{r.usage.input_tokens:,}",
                f"{r.usage.output_tokens:,}",
                _usd(r.usage.cost_usd) + (" +" if r.usage.unpriced else ""),
            ]
            for r in rows
        ),
        f"No findings in the last {span}.",
        "cost",
    )
    total = sum(r.usage.cost_usd for r in rows)
    unpriced = sum(r.usage.unpriced for r in rows)
    notes = [f"Findings published in the last {span}: {_usd(total)}"]
    if unpriced:
        notes.append(f"+ {unpriced:,} of unpriced models, not included")
    if not caught_up:
        notes.append("still reading the window's older findings…")
    return table + f'<p class="note">{h("; ".join(notes))}</p>'


def counts_section(dead: int, rejected: int) -> str:
    return (
        f'<a href="/records/dlq">Dead letters: <b id="dlq-count">{dead:,}</b></a> · '
        f'<a href="/records/rejected">Rejected: <b id="rejected-count">{rejected:,}</b></a>'
    )


def tasks_section(p: Page[TaskRow], *, before: str | None) -> str:
    def route(r: TaskRow) -> str:
        where = "/".join(x for x in (r.route.get("vendor"), r.route.get("model")) if x)
        return h(where or "-")

    def finding(r: TaskRow) -> str:
        status = r.summary.get("status")
        if not status:
            return "-"
        return f'<span class="status {h(status)}">{h(status)}</span>'

    table = _table(
        ["Posted", "Task", "Prompt", "Urgency", "State", "Route", "Finding", "Cost"],
        (
            [
                h(_when(r.entry_id)),
                task_link(r.task_id),
                h(r.prompt),
                h(r.urgency),
                h(r.route.get("state", "posted")),
                route(r),
                finding(r),
                _usd(r.summary["cost_usd"]) if "cost_usd" in r.summary else "-",
            ]
            for r in p.rows
        ),
        "No tasks in the intake stream.",
        "tasks",
    )
    links = []
    if before:
        links.append('<a class="newest" href="/tasks">Newest</a>')
    if p.older:
        links.append(f'<a class="older" href="/tasks?{urlencode({"before": p.older})}">Older</a>')
    return table + f'<p class="pager">{" · ".join(links)}</p>'


# -- one task --------------------------------------------------------------------------------


def task_section(t: TaskPage, *, read_only: bool) -> str:
    if not (t.record or t.view or t.intake):
        return f'<p class="empty">No task {h(t.task_id)} in this namespace (yet?).</p>'
    status = t.view.summary.status if t.view else ""
    state = status or t.record.get("state", "posted")
    requested = t.cancel_requested and not status
    parts = [
        f'<p>State: <span id="task-state" class="status {h(state)}">{h(state)}</span>'
        + (h(f" (cancel requested: {t.cancel_requested})") if requested else "")
        + "</p>"
    ]
    if status not in FINISHED:
        disabled = " disabled" if read_only else ""
        parts.append(
            f'<button class="action cancel" data-action="/api/tasks/{quote(t.task_id, safe="")}'
            f'/cancel"{disabled}>Cancel this task</button>'
        )
    if t.intake:
        shown = {k: v for k, v in t.intake.items() if k not in ("context",)}
        parts.append("<h3>Posted</h3>" + _kv(shown))
    if t.record:
        parts.append("<h3>Route</h3>" + _kv(t.record))
    if t.view:
        s = t.view.summary
        cost = _usd(s.cost_usd)
        if s.duplicate_findings:
            cost += h(f" (+ {_usd(s.duplicate_cost_usd)} of {s.duplicate_findings} duplicate)")
        parts.append(
            "<h3>Cost</h3>"
            + _kv({"cost": cost, "tokens in": f"{s.input_tokens:,}",
                   "tokens out": f"{s.output_tokens:,}", "attempts": str(s.attempts),
                   "latency": f"{s.latency_ms:,.0f} ms", "worker": s.worker}, raw=("cost",))
        )  # fmt: skip
        parts.append(
            "<h3>Findings</h3>"
            + _table(
                [
                    "Finding",
                    "Status",
                    "Vendor / model",
                    "Attempt",
                    "Tokens",
                    "Cost",
                    "Error",
                    "Answer",
                ],
                (
                    [
                        h(f.finding_id),
                        h(f.status.value),
                        h(f"{f.vendor}/{f.model}"),
                        str(f.attempt),
                        h(f"{f.input_tokens:,} in / {f.output_tokens:,} out"),
                        _usd(f.cost_usd),
                        h(f.error or ""),
                        h(f.summary[:400]),
                    ]
                    for f in t.view.findings
                ),
                "No findings yet.",
                "findings",
            )
        )
    else:
        parts.append('<h3>Findings</h3><p class="empty">No findings yet.</p>')
    return "".join(parts)


def _kv(d: dict[str, str], raw: tuple[str, ...] = ()) -> str:
    rows = "".join(
        f"<tr><th>{h(k)}</th><td>{v if k in raw else h(_stamp(k, v))}</td></tr>"
        for k, v in d.items()
    )
    return f'<table class="kv">{rows}</table>'


# -- dead-letter and rejected records --------------------------------------------------------


def records_section(
    which: str, total: int, p: Page[RecordRow], *, before: str | None, read_only: bool
) -> str:
    def original(r: RecordRow) -> str:
        if r.rejection is None:
            return h(_short(r.raw))
        if r.rejection.excerpted:
            return h(f"excerpt {_short(r.rejection.excerpt)} (not replayable)")
        return h(_short(r.rejection.original))

    def action(r: RecordRow) -> str:
        if r.rejection is None or r.rejection.excerpted or not r.rejection.original:
            return ""
        disabled = " disabled" if read_only else ""
        return (
            f'<button class="action replay" data-action="/api/records/{which}/'
            f'{quote(r.id, safe="")}/replay"{disabled}>Replay</button>'
        )

    table = _table(
        ["Record", "When", "From", "Deliveries", "Reason", "Field", "Original", ""],
        (
            [
                h(r.id),
                h(_when(r.id)),
                h(f"{r.rejection.source_stream} {r.rejection.source_id}") if r.rejection else "-",
                str(r.rejection.deliveries) if r.rejection else "-",
                h(r.rejection.reason) if r.rejection else "not a dead-letter record",
                h(r.rejection.field) if r.rejection else "",
                original(r),
                action(r),
            ]
            for r in p.rows
        ),
        "Nothing here.",
        "records",
    )
    links = []
    if before:
        links.append(f'<a class="newest" href="/records/{which}">Newest</a>')
    if p.older:
        links.append(
            f'<a class="older" href="/records/{which}?{urlencode({"before": p.older})}">Older</a>'
        )
    return (
        f'<p>{total:,} record(s), newest first.</p>{table}<p class="pager">{" · ".join(links)}</p>'
    )


def _short(fields: dict[str, str], budget: int = 200) -> str:
    out = " ".join(f"{k}={v!r}" for k, v in fields.items())
    return out if len(out) <= budget else out[: budget - 1] + "…"

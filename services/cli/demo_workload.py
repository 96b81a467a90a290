"""The demo's workload, after the original design: research tasks of mixed complexity, some
asking the history shard for context, and the shard's corpus. Pure and deterministic."""

from __future__ import annotations

import random

from services.megashard.corpus import Document
from shared.protocol import Task

SHARD = "history"
SHARD_SPECIALTY = "ops-history"
SIMULATOR_LATENCY_S = {"claude": 1.2, "gemini": 0.8, "openai": 1.0, "deepseek": 0.6}
# The original design's 40 workers: 15 Claude, 10 Gemini, 5 GPT, 10 DeepSeek, here as one
# process per vendor holding that many tasks in flight.
WORKERS = {"claude": 15, "gemini": 10, "openai": 5, "deepseek": 10}

_SUPPLIERS = ("Dupont", "Okafor Logistics", "Nordlicht GmbH", "Sato Components", "Vega Foods")
_REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
_YEARS = (2021, 2022, 2023, 2024, 2025)
_SIMPLE = (
    "What currency does {supplier} invoice in?",
    "Which region hosts the {region} billing database?",
    "List the payment terms we agreed with {supplier}.",
    "What does the status code 429 mean for our vendor calls?",
)
_MEDIUM = (
    "Summarise the supplier terms of {supplier} for {year} and flag anything unusual.",
    "Compare the {year} and {next_year} invoice volumes for {region} and explain the change.",
    "Draft a short note to finance on late payments from {supplier} in {year}.",
)
_COMPLEX = (
    "Review this retry helper for race conditions and fix them:\n```python\n"
    "import time\n_calls = 0\ndef retry(fn, n=3):\n    global _calls\n    for i in range(n):\n"
    "        _calls += 1\n        try:\n            return fn()\n        except Exception:\n"
    "            time.sleep(2 ** i)\n```",
    "Write a SQL query for the top 10 suppliers by {year} spend in {region}, then explain the "
    "index it needs and the trade-offs of a covering index.",
)
_STRATEGIC = (
    "Evaluate the strategic options for consolidating our {region} suppliers over the next "
    "three years: costs, risks, negotiating leverage and a recommendation.",
    "Propose a multi-region failover strategy for {region} with trade-offs, costs and a "
    "12-month roadmap.",
)
_HISTORY = (
    "Using our incident history, what caused the {region} outages in {year}?",
    "From the operations history, how did {supplier} deliveries change after {year}?",
    "What did the {year} audits find about the {region} ledger?",
)
# (share of the workload, templates, task_type)
_MIX = (
    (0.40, _SIMPLE, "research"),
    (0.25, _MEDIUM, "research"),
    (0.10, _COMPLEX, "code"),
    (0.05, _STRATEGIC, "strategy"),
    (0.20, _HISTORY, "research"),
)


def research_tasks(n: int, run_id: str, seed: int = 7) -> list[Task]:
    """`n` tasks: 40% simple, 25% medium, 10% code, 5% strategic, 20% asking the shard."""
    rng = random.Random(seed)
    counts = [int(n * share) for share, _, _ in _MIX]
    counts[0] += n - sum(counts)
    tasks: list[Task] = []
    for (_, templates, task_type), count in zip(_MIX, counts, strict=True):
        for _ in range(count):
            year = rng.choice(_YEARS)
            prompt = rng.choice(templates).format(
                supplier=rng.choice(_SUPPLIERS),
                region=rng.choice(_REGIONS),
                year=year,
                next_year=year + 1,
            )
            tasks.append(
                Task(
                    task_id=f"{run_id}-{len(tasks):04d}",
                    task_type=task_type,
                    prompt=prompt,
                    run_id=run_id,
                    parent_shard=SHARD_SPECIALTY if templates is _HISTORY else None,
                    urgency="high" if rng.random() < 0.1 else "normal",
                )
            )
    rng.shuffle(tasks)
    return tasks


def history_corpus(years: tuple[int, ...] = _YEARS) -> list[Document]:
    """Five years of operations history: incident reports, supplier reviews and audits per
    region and quarter (about 100K tokens)."""
    docs = []
    for year in years:
        for quarter in range(1, 5):
            for region in _REGIONS:
                supplier = _SUPPLIERS[(year + quarter) % len(_SUPPLIERS)]
                docs.append(
                    Document(
                        f"incidents/{year}-Q{quarter}-{region}.md",
                        _incident(year, quarter, region, supplier),
                    )
                )
        for supplier in _SUPPLIERS:
            docs.append(Document(f"suppliers/{year}-{supplier}.md", _review(year, supplier)))
        docs.append(Document(f"audits/{year}.md", _audit(year)))
    return docs


def _incident(year: int, quarter: int, region: str, supplier: str) -> str:
    lines = [f"# Incident report {year} Q{quarter}, {region}"]
    for week in range(1, 14):
        lines.append(
            f"Week {week}: the {region} billing database saw latency spikes during invoice "
            f"runs; failover to the standby took {(week * quarter) % 9 + 2} minutes. Root cause: "
            f"connection pool exhaustion after a {supplier} batch upload. Outages were "
            f"tracked against the {year} error budget and the retry policy backed off with "
            f"jitter on HTTP 429."
        )
    return "\n".join(lines)


def _review(year: int, supplier: str) -> str:
    return "\n".join(
        [f"# Supplier review {supplier}, {year}"]
        + [
            f"Delivery {i}: {supplier} shipped {100 + (i * year) % 400} units; payment terms net "
            f"{30 + (i % 3) * 15} days; {i % 4} late invoices; deliveries changed after the "
            f"{year} contract renewal."
            for i in range(1, 25)
        ]
    )


def _audit(year: int) -> str:
    return "\n".join(
        [f"# Audit {year}"]
        + [
            f"Finding {i}: the {region} ledger had {i + year % 7} unreconciled entries; "
            f"audits recommended quarterly reconciliation of the {region} ledger."
            for i, region in enumerate(_REGIONS * 6, start=1)
        ]
    )

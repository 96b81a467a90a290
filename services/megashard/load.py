"""Loading context into a shard: count it with the vendor's own tokenizer, refuse what does
not fit the model's real input limit, and write it to the store as a new version."""

from __future__ import annotations

from collections.abc import Sequence

from services.megashard.corpus import SYSTEM_PROMPT, Document, render, unique_names
from services.megashard.settings import check_shard_id
from services.megashard.store import ContextStore, Manifest
from shared.llm.base import LLMClient
from shared.llm.prices import PriceTable
from shared.llm.types import LLMRequest


class LoadError(ValueError):
    """The context cannot be loaded as asked; the message says why and what to do."""


class ContextTooLarge(LoadError):
    def __init__(self, message: str, *, tokens: int, limit: int) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


async def load_context(
    store: ContextStore,
    llm: LLMClient,
    prices: PriceTable,
    *,
    shard: str,
    documents: Sequence[Document],
    model: str,
    specialty: str = "",
    append: bool = False,
    reserve_tokens: int = 8192,
) -> Manifest:
    """Count, check and store `documents` as the shard's next version.

    With `append`, the new documents follow the current version's (same vendor and model);
    otherwise they replace them. Raises ContextTooLarge (nothing is written) when the
    context plus `reserve_tokens` for the query and the answer exceeds the model's window.
    """
    try:
        check_shard_id(shard)
    except ValueError as exc:
        raise LoadError(str(exc)) from None
    price = prices.get(model)
    if price is None:
        raise LoadError(
            f"model {model!r} is not in the price table, so its context window is unknown; "
            "add it to a SWARM_PRICES_FILE or choose another model"
        )
    if price.vendor != llm.vendor:
        raise LoadError(f"model {model!r} is a {price.vendor} model, not {llm.vendor}")
    head = await store.head(shard)
    base: list[Document] = []
    if append and head is not None:
        if (head.vendor, head.model) != (llm.vendor, model):
            raise LoadError(
                f"shard {shard!r} holds {head.vendor}/{head.model} context; appending keeps "
                f"its model (drop --model/--vendor, or load without --append to replace it)"
            )
        base = await store.documents(await store.manifest(shard, head.version))
        specialty = specialty or head.specialty
    docs = unique_names([*base, *documents])
    context = render(docs)
    count = await llm.count_tokens(
        LLMRequest(prompt="?", model=model, system=SYSTEM_PROMPT, context=context)
    )
    limit = price.context_window - reserve_tokens
    if count.tokens > limit:
        raise ContextTooLarge(
            _too_large(
                shard,
                model,
                tokens=count.tokens,
                method=count.method,
                window=price.context_window,
                reserve=reserve_tokens,
                docs=docs,
            ),
            tokens=count.tokens,
            limit=limit,
        )
    return await store.commit(
        shard,
        docs,
        base=head.version if head is not None else None,
        vendor=llm.vendor,
        model=model,
        specialty=specialty,
        tokens=count.tokens,
        token_method=count.method,
        window=price.context_window,
    )


def _too_large(
    shard: str,
    model: str,
    *,
    tokens: int,
    method: str,
    window: int,
    reserve: int,
    docs: Sequence[Document],
) -> str:
    limit = window - reserve
    chars = sum(len(d.text) for d in docs) or 1
    biggest = sorted(docs, key=lambda d: len(d.text), reverse=True)[:3]
    listed = ", ".join(f"{d.name} (~{tokens * len(d.text) // chars:,})" for d in biggest)
    return (
        f"shard {shard!r}: the context is {tokens:,} tokens ({method}, {model}) but the model "
        f"takes {window:,} input tokens and {reserve:,} are kept for the query and the "
        f"answer, so at most {limit:,} fit: remove {tokens - limit:,} tokens "
        f"(largest documents: {listed}), or split it across shards"
    )

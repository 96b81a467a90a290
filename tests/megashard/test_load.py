"""Loading context: the vendor's token count, the window limit, versions, durability."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.megashard.corpus import Document, render
from services.megashard.load import ContextTooLarge, LoadError
from services.megashard.store import ContextStore, StaleVersion
from shared.protocol import Names
from tests.megashard.conftest import Load, filler


async def test_load_counts_with_the_vendors_tokenizer_and_stores_version_1(
    redis: Redis, names: Names, load: Load
) -> None:
    docs = [Document("a.md", filler(3000)), Document("b.md", filler(2000, seed=3))]
    manifest = await load("history", docs, specialty="history")

    assert manifest.version == 1
    assert manifest.token_method == "gemini.countTokens"
    assert manifest.window == 1_048_576
    # The simulator's tokenizer is ceil(chars / 4) per part: the context and the system
    # prompt and the placeholder question were counted, not words.
    assert manifest.tokens > len(render(docs)) // 4
    assert manifest.tokens < len(render(docs)) // 4 + 200
    store = ContextStore(redis, names)
    head = await store.head("history")
    assert head is not None
    assert (head.version, head.tokens, head.specialty, head.documents) == (
        1,
        manifest.tokens,
        "history",
        2,
    )
    assert await store.documents(await store.manifest("history", 1)) == docs
    assert await store.shards() == ["history"]


async def test_claude_shard_counts_with_anthropic_count_tokens(load: Load) -> None:
    manifest = await load("legal", [Document("nda.md", filler(1000))], vendor="claude")
    assert manifest.token_method == "anthropic.count_tokens"
    assert manifest.window == 200_000
    assert manifest.model == "claude-haiku-4-5"


async def test_context_beyond_the_window_is_refused_and_nothing_is_written(
    redis: Redis, names: Names, load: Load
) -> None:
    # ~201K tokens for a 200K window.
    big = [Document(f"part{i}.txt", "x" * 201_000) for i in range(4)]
    with pytest.raises(ContextTooLarge) as info:
        await load("legal", big, vendor="claude", reserve_tokens=8192)
    message = str(info.value)
    assert info.value.tokens > 200_000
    assert info.value.limit == 200_000 - 8192
    assert "200,000 input tokens" in message
    assert "8,192 are kept for the query and the answer" in message
    assert "part0.txt" in message
    assert await ContextStore(redis, names).head("legal") is None


async def test_the_reserve_for_query_and_answer_counts_against_the_window(load: Load) -> None:
    docs = [Document("a.txt", "y" * 760_000)]  # ~190K tokens: fits 200K, not 200K - 16K
    manifest = await load("fits", docs, vendor="claude", reserve_tokens=8192)
    assert manifest.tokens > 184_000
    with pytest.raises(ContextTooLarge):
        await load("tight", docs, vendor="claude", reserve_tokens=16_384)


async def test_append_makes_a_new_version_and_keeps_the_old_one(
    redis: Redis, names: Names, load: Load
) -> None:
    first = [Document("2021.md", filler(800))]
    second = [Document("2022.md", filler(900, seed=1))]
    v1 = await load("history", first, specialty="history")
    v2 = await load("history", second, append=True)
    v3 = await load("history", [Document("fresh.md", filler(500, seed=2))])

    assert (v1.version, v2.version, v3.version) == (1, 2, 3)
    assert v2.parent == 1
    assert [d.name for d in v2.documents] == ["2021.md", "2022.md"]
    assert v2.specialty == "history"  # kept from the shard on append
    assert v2.tokens > v1.tokens
    assert [d.name for d in v3.documents] == ["fresh.md"]  # a load without --append replaces
    store = ContextStore(redis, names)
    assert [d.name for d in (await store.manifest("history", 1)).documents] == ["2021.md"]
    assert (await store.head("history")).version == 3  # type: ignore[union-attr]


async def test_identical_text_is_stored_once(redis: Redis, names: Names, load: Load) -> None:
    text = filler(700)
    await load("one", [Document("a.md", text)])
    await load("two", [Document("copy-of-a.md", text)])
    blobs = [k async for k in redis.scan_iter(match=f"{names.namespace}:blob:*")]
    assert len(blobs) == 1


async def test_append_with_another_model_is_refused(load: Load) -> None:
    await load("history", [Document("a.md", filler(500))])
    with pytest.raises(LoadError, match="appending keeps its model"):
        await load("history", [Document("b.md", filler(500))], vendor="claude", append=True)


async def test_two_loaders_racing_do_not_overwrite_each_other(
    redis: Redis, names: Names, load: Load
) -> None:
    await load("history", [Document("a.md", filler(300))])
    store = ContextStore(redis, names)
    docs = [Document("b.md", filler(300, seed=1))]
    common = {
        "vendor": "gemini",
        "model": "gemini-2.5-flash-lite",
        "specialty": "",
        "tokens": 1,
        "token_method": "test",
        "window": 1_048_576,
    }
    await store.commit("history", docs, base=1, **common)  # type: ignore[arg-type]
    with pytest.raises(StaleVersion, match="moved to version 2"):
        await store.commit("history", docs, base=1, **common)  # type: ignore[arg-type]

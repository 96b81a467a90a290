"""Citations: the `Sources:` line of answers whose prompt holds `<document>` blocks."""

from __future__ import annotations

import random
import time

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from services.simulator.caching import GeminiCache, GeminiCacheStore
from services.simulator.citations import Cited, Document, cite, cited, documents, keywords
from services.simulator.text import answer
from services.simulator.tokens import Part, part
from tests.simulator.conftest import LONG

QUESTION = "What were the supplier payment terms in 2021?"  # supplier, payment, terms
SOURCES = "Sources: contract.txt#L1; notes.txt#L1; invoices.txt#L1"  # one-line documents


def doc(name: str, text: str) -> str:
    return f'<document source="{name}">\n{text}\n</document>\n'


# Shared keywords with QUESTION: contract 3, notes 2, invoices 1, memo 1 (later), ledger 0.
# The filler (about 2250 tokens, none shared) makes the context big enough to be cached.
DOCS = "".join(
    [
        "Answer from these documents.\n",
        doc("ledger.txt", "Ledger totals per quarter, 2021."),
        doc("contract.txt", "The SUPPLIER agreed payment terms of net 30 days."),
        doc("invoices.txt", "Three invoices from the supplier's office were paid late."),
        doc("memo.txt", "Payment reminders went out in March."),
        doc("notes.txt", "Terms of payment were renegotiated twice."),
        doc("filler.txt", LONG),
    ]
)


def last_line(text: str) -> str:
    return text.rsplit("\n", 1)[-1]


# -- the rules, without a server


def test_keywords_are_case_folded_ascii_letter_runs_of_three_or_more() -> None:
    got = keywords("The Supplier's payment-terms for 2021: naïve ok, re-sign IT x9yz")
    assert got == {b"supplier", b"payment", b"terms", b"sign"}


def test_most_shared_first_ties_in_prompt_order_at_most_three() -> None:
    parts = [part("system", DOCS), part("user", QUESTION)]
    assert cite(parts, QUESTION) == ["contract.txt", "notes.txt", "invoices.txt"]
    assert cite(parts, "Supplier?") == ["contract.txt", "invoices.txt"]
    assert cite(parts, "Fox and dog") == ["filler.txt"]
    assert cite(parts, "Nothing in common here") == []
    assert cite([part("user", QUESTION)], QUESTION) == []


def test_documents_can_be_in_any_part_and_a_name_is_cited_once() -> None:
    parts = [
        part("system", doc("a", "alpha beta")),
        part("user", "intro " + doc("b", "alpha beta gamma") + doc("a", "gamma")),
    ]
    assert cite(parts, "alpha beta gamma") == ["b", "a"]


def test_the_question_is_the_last_user_message_without_its_documents() -> None:
    last_user = doc("big.txt", "supplier payment terms") + doc("x.txt", "unrelated") + "Why fox?"
    parts = [part("system", DOCS), part("user", last_user)]
    # Its own documents still count as documents, but their words are not the question's.
    assert cite(parts, last_user) == ["filler.txt"]


def test_only_the_exact_block_form_counts() -> None:
    near_misses = [
        "<document source='a'>\nsupplier\n</document>",
        '<document source="a">supplier\n</document>',
        '<document source="a">\nsupplier</document>',
        '<document  source="a">\nsupplier\n</document>',
        '<document source="a">\nsupplier\n',
    ]
    for text in near_misses:
        assert cite([part("system", text)], "supplier") == [], text


def test_search_and_keyword_sets_agree() -> None:
    rng = random.Random(5)
    vocab = ["".join(rng.choices("abcdefgh", k=rng.randint(2, 5))) for _ in range(400)]
    text = "".join(
        doc(f"d{i}", " ".join(w.capitalize() if rng.random() < 0.2 else w for w in words))
        for i in range(60)
        for words in [rng.sample(vocab, 40)]
    )
    parts = [part("system", text)]
    for size in (3, 10, 60):  # short questions search, long ones build sets
        for _ in range(20):
            question = ", ".join(rng.sample(vocab, size))
            expected = cite([], question, documents(parts))
            assert cite(parts, question) == expected
            assert expected  # the comparison means something


def test_each_document_is_cited_with_the_lines_that_hold_question_keywords() -> None:
    report = "\n".join(
        ["Quarterly report", "Supplier list", "Weather", "Payment TERMS: net 30", "End"]
    )
    memo = "Opening\nThe supplier called."
    parts = [part("system", doc("report.md", report) + doc("memo.md", memo))]
    want = [Cited("report.md", 2, 4), Cited("memo.md", 2, 2)]
    assert cited(parts, QUESTION) == want
    assert [str(c) for c in want] == ["report.md#L2-L4", "memo.md#L2"]
    # A Gemini cache keeps its documents' text: the same lines from it.
    assert cited([], QUESTION, documents(parts)) == want
    text = answer("claude-x", [*parts, part("user", QUESTION)], QUESTION, None).text
    assert last_line(text) == "Sources: report.md#L2-L4; memo.md#L2"


def test_answer_ends_with_the_sources_line_and_is_cut_with_it() -> None:
    parts = [part("system", DOCS), part("user", QUESTION)]
    full = answer("claude-x", parts, QUESTION, None)
    assert last_line(full.text) == SOURCES
    assert full.text.count("\n") == 1 and not full.truncated
    cut = answer("claude-x", parts, QUESTION, full.tokens - 3)
    assert cut.truncated and full.text.startswith(cut.text) and SOURCES not in cut.text
    code = answer("gpt-5-codex", parts, QUESTION, None)
    assert "```" in code.text and last_line(code.text) == SOURCES
    plain = answer("claude-x", [part("user", QUESTION)], QUESTION, None)
    assert "Sources:" not in plain.text and "\n" not in plain.text


def test_a_4mb_prompt_is_parsed_in_tens_of_milliseconds() -> None:
    rng = random.Random(1)
    vocab = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))
        for _ in range(20_000)
    ]
    blocks = [doc(f"d{i}.txt", " ".join(rng.choices(vocab, k=1100))) for i in range(520)]
    parts: list[Part] = [part("system", "".join(blocks)), part("user", QUESTION + " " + vocab[7])]
    assert parts[0].tokens > 1_000_000  # about 4 MB
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        cited = cite(parts, parts[1].text)
        best = min(best, time.perf_counter() - started)
    assert cited
    assert best < 0.5  # a regression guard: about 20 ms here


# -- through the real SDKs


async def test_anthropic_cites_documents_of_a_cached_system_block(
    claude: anthropic.AsyncAnthropic,
) -> None:
    system: list[anthropic.types.TextBlockParam] = [
        {"type": "text", "text": DOCS, "cache_control": {"type": "ephemeral"}}
    ]
    user: list[anthropic.types.MessageParam] = [{"role": "user", "content": QUESTION}]
    first = await claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=512, system=system, messages=user
    )
    again = await claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=512, system=system, messages=user
    )
    assert first.usage.cache_creation_input_tokens and again.usage.cache_read_input_tokens
    text = first.content[0].text
    assert last_line(text) == SOURCES
    assert again.content[0].text == text


async def test_anthropic_stream_carries_the_sources_line(
    claude: anthropic.AsyncAnthropic,
) -> None:
    async with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=512,
        system=DOCS,
        messages=[{"role": "user", "content": "Which supplier?"}],
    ) as stream:
        final = await stream.get_final_message()
    assert last_line(final.content[0].text) == "Sources: contract.txt#L1; invoices.txt#L1"


async def test_gemini_cites_documents_of_the_named_cache(gemini: genai.Client) -> None:
    model = "gemini-2.5-flash"
    cache = await gemini.aio.caches.create(
        model=model,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=DOCS)])], ttl="300s"
        ),
    )
    assert cache.name
    resp = await gemini.aio.models.generate_content(
        model=model,
        contents=QUESTION,
        config=types.GenerateContentConfig(cached_content=cache.name),
    )
    assert resp.usage_metadata and resp.usage_metadata.cached_content_token_count
    assert last_line(resp.text or "") == SOURCES
    chunks = [
        chunk.text or ""
        async for chunk in await gemini.aio.models.generate_content_stream(
            model=model,
            contents="Payment?",
            config=types.GenerateContentConfig(cached_content=cache.name),
        )
    ]
    assert last_line("".join(chunks)) == "Sources: contract.txt#L1; memo.txt#L1; notes.txt#L1"
    # The same documents sent inline are cited the same way.
    inline = await gemini.aio.models.generate_content(
        model=model,
        contents=[
            types.Content(role="user", parts=[types.Part(text=DOCS)]),
            types.Content(role="model", parts=[types.Part(text="Read.")]),
            types.Content(role="user", parts=[types.Part(text=QUESTION)]),
        ],
    )
    assert last_line(inline.text or "") == SOURCES


async def test_openai_chat_and_responses_cite_documents(oai: openai.AsyncOpenAI) -> None:
    chat = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": DOCS}, {"role": "user", "content": QUESTION}],
    )
    assert last_line(chat.choices[0].message.content or "") == SOURCES
    resp = await oai.responses.create(model="gpt-5-codex", instructions=DOCS, input=QUESTION)
    assert last_line(resp.output_text) == SOURCES


@pytest.mark.parametrize("system", ["Be brief.", DOCS], ids=["no documents", "no shared keyword"])
async def test_no_sources_line_without_a_cited_document(
    oai: openai.AsyncOpenAI, system: str
) -> None:
    chat = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "Summarise the quarterly ledger."},
        ],
    )
    text = chat.choices[0].message.content or ""
    assert text.startswith("[sim gpt-4o-mini]")
    if system == DOCS:  # "ledger" is shared: the control case
        assert last_line(text) == "Sources: ledger.txt#L1"
    chat = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "Who won the cup final?"},
        ],
    )
    text = chat.choices[0].message.content or ""
    assert text.startswith("[sim gpt-4o-mini]") and "Sources:" not in text and "\n" not in text


async def test_the_max_tokens_cut_applies_to_the_sources_line(
    claude: anthropic.AsyncAnthropic,
) -> None:
    user: list[anthropic.types.MessageParam] = [{"role": "user", "content": QUESTION}]
    full = await claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=512, system=DOCS, messages=user
    )
    cut = await claude.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=full.usage.output_tokens - 2,
        system=DOCS,
        messages=user,
    )
    full_text = full.content[0].text
    cut_text = cut.content[0].text
    assert last_line(full_text) == SOURCES and full.stop_reason == "end_turn"
    assert cut.stop_reason == "max_tokens"
    assert full_text.startswith(cut_text) and SOURCES not in cut_text


def test_the_gemini_cache_store_is_bounded_least_recently_used_first() -> None:
    def cache(name: str, n_keywords: int) -> GeminiCache:
        kws = frozenset(f"w{'x' * i}".encode() for i in range(n_keywords))
        return GeminiCache(
            name=name,
            model="models/m",
            tokens=1,
            created="",
            updated="",
            expire_at=100.0,
            content_key="",
            documents=(Document(name + ".txt", kws),),
        )

    store = GeminiCacheStore(max_caches=3, max_keywords=10)
    for name in ("a", "b", "c"):
        store.add(cache(name, 2))
    assert store.get("a", now=0) is not None  # "b" is now the least recently used
    store.add(cache("d", 2))
    assert [c.name for c in store.live(now=0)] == ["a", "c", "d"]  # creation order
    store.add(cache("e", 7))  # 13 keywords > 10: the least recently used go until it fits
    assert [c.name for c in store.live(now=0)] == ["d", "e"]
    store.remove("d")
    store.add(cache("f", 3))
    assert [c.name for c in store.live(now=0)] == ["e", "f"]
    assert store.get("e", now=100) is None and len(store) == 1  # expired

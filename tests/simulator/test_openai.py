"""OpenAI Chat Completions (and DeepSeek, OpenAI-compatible) through the real `openai` SDK."""

from __future__ import annotations

import httpx2
import openai
import pytest

from services.simulator.config import Overrides, SimulatorConfig
from services.simulator.server import Simulator
from tests.simulator.conftest import LONG, USER

MODEL = "gpt-4o-mini"


async def test_create_returns_text_and_usage(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *USER]
    resp = await oai.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    assert resp.headers["x-request-id"].startswith("req_")
    completion = resp.parse()
    text = completion.choices[0].message.content or ""
    assert text.startswith(f'[sim {MODEL}] Re: "Summarise the supplier payment terms for')
    assert completion.model == MODEL
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == 3 + 12
    assert usage.completion_tokens == -(-len(text) // 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert "prompt_cache_hit_tokens" not in (usage.model_extra or {})


async def test_same_request_same_text(oai: openai.AsyncOpenAI) -> None:
    first = await oai.chat.completions.create(model=MODEL, messages=USER)
    again = await oai.chat.completions.create(model=MODEL, messages=USER)
    assert first.choices[0].message.content == again.choices[0].message.content


async def test_max_completion_tokens_cuts_the_answer(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        max_completion_tokens=3,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_stream_with_include_usage(oai: openai.AsyncOpenAI) -> None:
    plain = await oai.chat.completions.create(model=MODEL, messages=USER)
    stream = await oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish = None
    usage_chunks = []
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage_chunks.append(chunk)
    assert "".join(pieces) == plain.choices[0].message.content
    assert len([p for p in pieces if p]) > 1
    assert finish == "stop"
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage == plain.usage


async def test_stream_without_include_usage_has_no_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model=MODEL, messages=USER, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


async def test_a_repeated_long_prefix_reports_cached_tokens(oai: openai.AsyncOpenAI) -> None:
    first = await oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": LONG}, *USER],
    )
    second = await oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": LONG}, {"role": "user", "content": "Other?"}],
    )
    other_model = await oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": LONG}, *USER],
    )
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert other_model.usage is not None and other_model.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # The shared system prompt is 2250 tokens: 17 whole 128-token blocks.
    assert second.usage.prompt_tokens_details.cached_tokens == 2176
    assert second.usage.prompt_tokens == 2250 + 2
    assert other_model.usage.prompt_tokens_details.cached_tokens == 0  # caches are per model


async def test_a_short_repeated_prompt_is_never_cached(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "z" * 4000}]  # 1000 tokens: under the minimum
    for _ in range(2):
        completion = await oai.chat.completions.create(model=MODEL, messages=messages)
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 0


async def test_deepseek_reports_cache_hit_and_miss(deepseek: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": LONG}, *USER]
    first = await deepseek.chat.completions.create(model="deepseek-chat", messages=messages)
    second = await deepseek.chat.completions.create(model="deepseek-chat", messages=messages)
    assert first.usage is not None and second.usage is not None
    extra1, extra2 = first.usage.model_extra or {}, second.usage.model_extra or {}
    assert extra1["prompt_cache_hit_tokens"] == 0
    assert extra1["prompt_cache_miss_tokens"] == 2262
    assert extra2["prompt_cache_hit_tokens"] == 2176
    assert extra2["prompt_cache_miss_tokens"] == 2262 - 2176
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == 2176


async def test_compat_prefix_speaks_openai(compat: openai.AsyncOpenAI) -> None:
    completion = await compat.chat.completions.create(model="llama3.1:8b", messages=USER)
    assert (completion.choices[0].message.content or "").startswith("[sim llama3.1:8b]")
    assert completion.usage is not None
    assert "prompt_cache_hit_tokens" not in (completion.usage.model_extra or {})


async def test_a_code_model_answers_with_a_code_block(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(model="gpt-5-codex", messages=USER)
    assert "```python\ndef answer_" in (completion.choices[0].message.content or "")


async def test_missing_key_is_the_vendors_401(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(
            f"{sim.base_url}/openai/v1/chat/completions", json={"model": MODEL, "messages": USER}
        )
    assert resp.status_code == 401
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(models={"gpt-tiny": Overrides(context_window=100)})]
)
async def test_over_the_window_is_context_length_exceeded(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "y" * 280}]  # 70 tokens
    ok = await oai.chat.completions.create(model="gpt-tiny", messages=messages, max_tokens=30)
    assert ok.usage is not None and ok.usage.prompt_tokens == 70
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(model="gpt-tiny", messages=messages, max_tokens=31)
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in caught.value.message
    assert "requested 101 tokens (70 in the messages, 31 in the completion)" in caught.value.message

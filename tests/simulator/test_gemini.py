"""Gemini generateContent, countTokens and cachedContents through the real `google-genai` SDK."""

from __future__ import annotations

import datetime as dt

import httpx2
import pytest
from google import genai
from google.genai import errors, types

from services.simulator.server import Simulator
from tests.simulator.conftest import LONG

MODEL = "gemini-2.5-flash"
QUESTION = "Summarise the supplier payment terms for 2021."


def _cache_config(**extra: object) -> types.CreateCachedContentConfig:
    return types.CreateCachedContentConfig(
        contents=[types.Content(role="user", parts=[types.Part(text=LONG)])],
        ttl="300s",
        display_name="terms",
        **extra,
    )


async def test_generate_returns_text_and_usage(gemini: genai.Client) -> None:
    resp = await gemini.aio.models.generate_content(
        model=MODEL,
        contents=QUESTION,
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=256),
    )
    text = resp.text or ""
    assert text.startswith(f'[sim {MODEL}] Re: "Summarise the supplier payment terms for')
    usage = resp.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == 3 + 12
    assert usage.candidates_token_count == -(-len(text) // 4)
    assert usage.total_token_count == 15 + usage.candidates_token_count
    assert usage.cached_content_token_count is None
    assert resp.candidates and resp.candidates[0].finish_reason == types.FinishReason.STOP


async def test_v1beta_is_served_too(sim: Simulator) -> None:
    http = httpx2.AsyncClient()
    client = genai.Client(
        api_key="test",
        http_options=types.HttpOptions(
            base_url=f"{sim.base_url}/gemini", api_version="v1beta", httpx_async_client=http
        ),
    )
    try:
        resp = await client.aio.models.generate_content(model=MODEL, contents=QUESTION)
    finally:
        await client.aio.aclose()
        await http.aclose()
    assert (resp.text or "").startswith(f"[sim {MODEL}]")


async def test_same_request_same_text_and_max_tokens_cut(gemini: genai.Client) -> None:
    first = await gemini.aio.models.generate_content(model=MODEL, contents=QUESTION)
    again = await gemini.aio.models.generate_content(model=MODEL, contents=QUESTION)
    short = await gemini.aio.models.generate_content(
        model=MODEL,
        contents=QUESTION,
        config=types.GenerateContentConfig(max_output_tokens=4),
    )
    assert first.text == again.text
    assert short.usage_metadata is not None and short.usage_metadata.candidates_token_count == 4
    assert short.candidates and short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_stream_chunks_carry_usage(gemini: genai.Client) -> None:
    plain = await gemini.aio.models.generate_content(model=MODEL, contents=QUESTION)
    chunks = [
        chunk
        async for chunk in await gemini.aio.models.generate_content_stream(
            model=MODEL, contents=QUESTION
        )
    ]
    assert len(chunks) > 1
    assert "".join(chunk.text or "" for chunk in chunks) == plain.text
    assert all(chunk.usage_metadata is not None for chunk in chunks)
    last = chunks[-1].usage_metadata
    assert last is not None and plain.usage_metadata is not None
    assert last.candidates_token_count == plain.usage_metadata.candidates_token_count
    assert last.prompt_token_count == plain.usage_metadata.prompt_token_count


async def test_count_tokens_equals_the_prompt_tokens_generation_reports(
    gemini: genai.Client,
) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text=LONG)]),
        types.Content(role="model", parts=[types.Part(text="Noted.")]),
        types.Content(role="user", parts=[types.Part(text=QUESTION)]),
    ]
    counted = await gemini.aio.models.count_tokens(model=MODEL, contents=contents)
    resp = await gemini.aio.models.generate_content(model=MODEL, contents=contents)
    assert resp.usage_metadata is not None
    assert counted.total_tokens == resp.usage_metadata.prompt_token_count == 2250 + 2 + 12


async def test_cache_lifecycle_and_generation_with_it(gemini: genai.Client) -> None:
    cache = await gemini.aio.caches.create(
        model=MODEL, config=_cache_config(system_instruction="You answer about the terms.")
    )
    assert cache.name and cache.name.startswith("cachedContents/")
    assert cache.model == f"models/{MODEL}"
    assert cache.display_name == "terms"
    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == 2250 + 7
    assert cache.expire_time is not None and cache.create_time is not None
    assert (
        dt.timedelta(seconds=295)
        < cache.expire_time - cache.create_time
        <= dt.timedelta(seconds=301)
    )

    fetched = await gemini.aio.caches.get(name=cache.name)
    assert fetched.name == cache.name and fetched.expire_time == cache.expire_time
    listed = [c.name async for c in await gemini.aio.caches.list()]
    assert listed == [cache.name]

    resp = await gemini.aio.models.generate_content(
        model=MODEL,
        contents=QUESTION,
        config=types.GenerateContentConfig(cached_content=cache.name),
    )
    usage = resp.usage_metadata
    assert usage is not None
    assert usage.cached_content_token_count == 2257
    assert usage.prompt_token_count == 2257 + 12  # the prompt count includes the cache
    counted = await gemini.aio.models.count_tokens(model=MODEL, contents=QUESTION)
    assert counted.total_tokens == 12

    updated = await gemini.aio.caches.update(
        name=cache.name, config=types.UpdateCachedContentConfig(ttl="3600s")
    )
    assert updated.expire_time is not None and updated.expire_time > cache.expire_time

    await gemini.aio.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as caught:
        await gemini.aio.caches.get(name=cache.name)
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    with pytest.raises(errors.ClientError) as caught:
        await gemini.aio.models.generate_content(
            model=MODEL,
            contents=QUESTION,
            config=types.GenerateContentConfig(cached_content=cache.name),
        )
    assert caught.value.code == 404
    assert [c.name async for c in await gemini.aio.caches.list()] == []


async def test_cache_rules_of_the_real_api(gemini: genai.Client) -> None:
    cache = await gemini.aio.caches.create(model=MODEL, config=_cache_config())
    with pytest.raises(errors.ClientError) as caught:
        await gemini.aio.models.generate_content(
            model=MODEL,
            contents=QUESTION,
            config=types.GenerateContentConfig(
                cached_content=cache.name, system_instruction="Not allowed with a cache."
            ),
        )
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "system_instruction" in (caught.value.message or "")

    with pytest.raises(errors.ClientError) as caught:
        await gemini.aio.models.generate_content(
            model="gemini-2.5-pro",
            contents=QUESTION,
            config=types.GenerateContentConfig(cached_content=cache.name),
        )
    assert caught.value.code == 400

    with pytest.raises(errors.ClientError) as caught:
        await gemini.aio.caches.create(
            model=MODEL,
            config=types.CreateCachedContentConfig(
                contents=[types.Content(role="user", parts=[types.Part(text="too small")])]
            ),
        )
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "min_total_token_count=1024" in (caught.value.message or "")


async def test_a_cache_with_expire_time(gemini: genai.Client) -> None:
    expire = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    cache = await gemini.aio.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=LONG)])],
            expire_time=expire,
        ),
    )
    assert cache.expire_time is not None
    assert abs(cache.expire_time - expire) < dt.timedelta(seconds=1)


async def test_missing_key_is_the_vendors_401(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(
            f"{sim.base_url}/gemini/v1/models/{MODEL}:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == 401
    assert resp.json()["error"]["status"] == "UNAUTHENTICATED"


async def test_model_info_reports_the_context_window(gemini: genai.Client) -> None:
    model = await gemini.aio.models.get(model="gemini-2.5-pro")
    assert model.name == "models/gemini-2.5-pro"
    assert model.input_token_limit == 1_048_576


async def test_stream_without_alt_sse_is_a_json_array(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(
            f"{sim.base_url}/gemini/v1beta/models/{MODEL}:streamGenerateContent",
            headers={"x-goog-api-key": "k"},
            json={"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]},
        )
    chunks = resp.json()
    assert resp.status_code == 200 and isinstance(chunks, list) and len(chunks) > 1
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("usageMetadata" in chunk for chunk in chunks)

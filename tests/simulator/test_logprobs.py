"""Token logprobs: sent in each vendor's wire form when asked, only then, the same for the
same seed, model and answer; refused with the vendor's 400 where the profile says so."""

from __future__ import annotations

import math

import openai
import pytest
from google import genai
from google.genai import errors, types

from services.simulator.config import Overrides, SimulatorConfig
from services.simulator.server import Simulator
from tests.simulator.conftest import USER
from tests.simulator.wire import sent_mean_logprob

MODEL = "gpt-4.1-mini"
GEMINI = "gemini-2.5-flash"
QUESTION = "Summarise the supplier payment terms for 2021."


async def test_openai_logprobs_only_when_asked_one_per_answer_token(
    oai: openai.AsyncOpenAI,
) -> None:
    plain = await oai.chat.completions.create(model=MODEL, messages=USER)
    asked = await oai.chat.completions.create(
        model=MODEL,
        messages=USER,
        logprobs=True,
    )
    assert plain.choices[0].logprobs is None
    logprobs = asked.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    text = asked.choices[0].message.content
    assert text == plain.choices[0].message.content
    assert "".join(t.token for t in logprobs.content) == text
    assert asked.usage is not None and len(logprobs.content) == asked.usage.completion_tokens
    assert all(
        -2.5 < t.logprob <= 0 and t.bytes == list(t.token.encode()) for t in logprobs.content
    )
    assert len({t.logprob for t in logprobs.content}) > 1  # not a constant


async def test_openai_stream_chunks_carry_their_tokens_logprobs(
    deepseek: openai.AsyncOpenAI,
) -> None:
    whole = await deepseek.chat.completions.create(
        model="deepseek-chat",
        messages=USER,
        logprobs=True,
    )
    stream = await deepseek.chat.completions.create(
        model="deepseek-chat",
        messages=USER,
        logprobs=True,
        stream=True,
    )
    streamed = []
    text = ""
    async for chunk in stream:
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs and choice.logprobs.content:
            assert "".join(t.token for t in choice.logprobs.content) == choice.delta.content
            streamed += [t.logprob for t in choice.logprobs.content]
    assert whole.choices[0].logprobs and whole.choices[0].logprobs.content
    assert text == whole.choices[0].message.content
    assert streamed == [t.logprob for t in whole.choices[0].logprobs.content]


async def test_gemini_avg_logprobs_only_when_asked(gemini: genai.Client) -> None:
    plain = await gemini.aio.models.generate_content(model=GEMINI, contents=QUESTION)
    asked = await gemini.aio.models.generate_content(
        model=GEMINI,
        contents=QUESTION,
        config=types.GenerateContentConfig(response_logprobs=True),
    )
    assert plain.candidates and plain.candidates[0].avg_logprobs is None
    assert plain.candidates[0].logprobs_result is None
    assert asked.candidates and asked.text == plain.text
    candidate = asked.candidates[0]
    assert candidate.logprobs_result and candidate.logprobs_result.chosen_candidates
    chosen = candidate.logprobs_result.chosen_candidates
    assert "".join(c.token or "" for c in chosen) == asked.text
    assert asked.usage_metadata and len(chosen) == asked.usage_metadata.candidates_token_count
    mean = math.fsum(c.log_probability or 0.0 for c in chosen) / len(chosen)
    assert candidate.avg_logprobs == pytest.approx(mean, rel=1e-12)
    assert -2.5 < mean < 0


async def test_same_seed_same_logprobs_another_seed_others() -> None:
    means = []
    for seed in (7, 7, 8):
        async with Simulator(SimulatorConfig(seed=seed)) as sim:
            means.append(
                [
                    await sent_mean_logprob(sim.base_url, vendor, model, QUESTION, 64)
                    for vendor, model in (("openai", MODEL), ("gemini", GEMINI))
                ]
            )
    assert means[0] == means[1]
    assert means[2][0] != means[0][0] and means[2][1] != means[0][1]


async def test_a_model_without_logprobs_refuses_them_as_the_vendor_does() -> None:
    config = SimulatorConfig(
        models={MODEL: Overrides(logprobs=False), GEMINI: Overrides(logprobs=False)}
    )
    async with Simulator(config) as sim:
        oai = openai.AsyncOpenAI(api_key="k", base_url=f"{sim.base_url}/openai/v1", max_retries=0)
        client = genai.Client(
            api_key="k", http_options=types.HttpOptions(base_url=f"{sim.base_url}/gemini")
        )
        try:
            with pytest.raises(openai.BadRequestError) as refused:
                await oai.chat.completions.create(
                    model=MODEL,
                    messages=USER,
                    logprobs=True,
                )
            assert (
                refused.value.param == "logprobs" and refused.value.code == "unsupported_parameter"
            )
            fine = await oai.chat.completions.create(model=MODEL, messages=USER)
            assert fine.choices[0].message.content
            with pytest.raises(errors.ClientError) as gemini_refused:
                await client.aio.models.generate_content(
                    model=GEMINI,
                    contents=QUESTION,
                    config=types.GenerateContentConfig(response_logprobs=True),
                )
            assert gemini_refused.value.code == 400
            assert "Logprobs is not enabled" in (gemini_refused.value.message or "")
        finally:
            await oai.close()
            await client.aio.aclose()

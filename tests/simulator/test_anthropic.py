"""Anthropic Messages through the real `anthropic` SDK."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from services.simulator.config import Overrides, SimulatorConfig
from services.simulator.server import Simulator
from tests.simulator.conftest import LONG, USER

MODEL = "claude-sonnet-4-6"


async def test_create_returns_text_and_usage(claude: anthropic.AsyncAnthropic) -> None:
    msg = await claude.messages.create(
        model=MODEL, max_tokens=256, system="Be brief.", messages=USER
    )
    text = msg.content[0].text
    assert text.startswith(f'[sim {MODEL}] Re: "Summarise the supplier payment terms for')
    assert msg.model == MODEL
    assert msg.stop_reason == "end_turn"
    # "Be brief." is 9 chars (3 tokens), the question 46 chars (12 tokens).
    assert msg.usage.input_tokens == 3 + 12
    assert msg.usage.output_tokens == -(-len(text) // 4)
    assert msg.usage.cache_creation_input_tokens == 0
    assert msg.usage.cache_read_input_tokens == 0
    assert msg._request_id and msg._request_id.startswith("req_")


async def test_same_request_same_text_other_request_other_text(
    claude: anthropic.AsyncAnthropic,
) -> None:
    first = await claude.messages.create(model=MODEL, max_tokens=256, messages=USER)
    again = await claude.messages.create(model=MODEL, max_tokens=256, messages=USER)
    other = await claude.messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Something else"}]
    )
    assert first.content[0].text == again.content[0].text
    assert first.content[0].text != other.content[0].text


async def test_output_is_cut_at_max_tokens(claude: anthropic.AsyncAnthropic) -> None:
    msg = await claude.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 5
    assert len(msg.content[0].text) == 20


async def test_stream_events_carry_text_and_usage(claude: anthropic.AsyncAnthropic) -> None:
    plain = await claude.messages.create(model=MODEL, max_tokens=256, messages=USER)
    kinds: list[str] = []
    async with claude.messages.stream(model=MODEL, max_tokens=256, messages=USER) as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") > 1  # the text arrives in pieces
    assert final.content[0].text == plain.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.stop_reason == "end_turn"


async def test_count_tokens_equals_the_prompt_tokens_generation_reports(
    claude: anthropic.AsyncAnthropic,
) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "lookup", "description": "find a record", "input_schema": {"type": "object"}}]
    counted = await claude.messages.count_tokens(
        model=MODEL,
        system=system,
        tools=tools,
        messages=USER,
    )
    for _ in range(2):  # once writing the cache, once reading it
        usage = (
            await claude.messages.create(
                model=MODEL,
                max_tokens=16,
                system=system,
                tools=tools,
                messages=USER,
            )
        ).usage
        reported = (
            usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        assert counted.input_tokens == reported


async def test_cache_control_writes_then_reads(claude: anthropic.AsyncAnthropic) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    first = await claude.messages.create(model=MODEL, max_tokens=16, system=system, messages=USER)
    second = await claude.messages.create(
        model=MODEL,
        max_tokens=16,
        system=system,
        messages=[{"role": "user", "content": "A different question"}],
    )
    assert first.usage.cache_creation_input_tokens == 2250
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 2250
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.usage.input_tokens == 12  # only the uncached question
    assert second.usage.cache_read_input_tokens == 2250
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == 5


async def test_one_hour_ttl_and_top_level_cache_control(claude: anthropic.AsyncAnthropic) -> None:
    messages = [{"role": "user", "content": LONG}]
    first = await claude.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=messages,
        cache_control={"type": "ephemeral", "ttl": "1h"},
    )
    again = await claude.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=messages,
        cache_control={"type": "ephemeral", "ttl": "1h"},
    )
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 2250
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert first.usage.input_tokens == 0
    assert again.usage.cache_read_input_tokens == 2250


async def test_a_prefix_below_the_minimum_is_silently_not_cached(
    claude: anthropic.AsyncAnthropic,
) -> None:
    system = [{"type": "text", "text": "short " * 100, "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        msg = await claude.messages.create(model=MODEL, max_tokens=16, system=system, messages=USER)
        assert msg.usage.cache_creation_input_tokens == 0
        assert msg.usage.cache_read_input_tokens == 0
        assert msg.usage.input_tokens == 150 + 12


async def test_a_later_breakpoint_reads_the_earlier_prefix_and_writes_the_rest(
    claude: anthropic.AsyncAnthropic,
) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    await claude.messages.create(model=MODEL, max_tokens=16, system=system, messages=USER)
    turn = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "x" * 800, "cache_control": {"type": "ephemeral"}}
            ],
        }
    ]
    msg = await claude.messages.create(model=MODEL, max_tokens=16, system=system, messages=turn)
    assert msg.usage.cache_read_input_tokens == 2250
    assert msg.usage.cache_creation_input_tokens == 200
    assert msg.usage.input_tokens == 0


async def test_missing_max_tokens_is_a_400(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(
            f"{sim.base_url}/anthropic/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "messages": USER},
        )
    assert resp.status_code == 400
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in resp.json()["error"]["message"]
    assert resp.headers["request-id"].startswith("req_")


async def test_missing_key_is_the_vendors_401(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(
            f"{sim.base_url}/anthropic/v1/messages",
            json={"model": MODEL, "max_tokens": 8, "messages": USER},
        )
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"


async def test_x_api_key_header_is_accepted(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(
            f"{sim.base_url}/anthropic/v1/messages",
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "max_tokens": 8, "messages": USER},
        )
    assert resp.status_code == 200
    assert resp.json()["type"] == "message"


@pytest.mark.parametrize(
    "sim_config",
    [SimulatorConfig(models={"claude-tiny": Overrides(context_window=100)})],
)
async def test_prompt_plus_max_tokens_over_the_window_is_prompt_too_long(
    claude: anthropic.AsyncAnthropic,
) -> None:
    # 280 chars = 70 tokens fits; with max_tokens 40 it does not.
    prompt = [{"role": "user", "content": "y" * 280}]
    ok = await claude.messages.create(model="claude-tiny", max_tokens=30, messages=prompt)
    assert ok.usage.input_tokens == 70
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude.messages.create(model="claude-tiny", max_tokens=40, messages=prompt)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == "prompt is too long: 110 tokens > 100 maximum"

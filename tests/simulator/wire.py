"""What the simulator sends on the wire for one plain question, read with plain HTTP (no
SDK, no adapter): the yardstick the adapters' and the worker's confidence is checked by."""

from __future__ import annotations

import math

import httpx2

from shared.llm.settings import SIMULATOR_PREFIX

KEY = "sk-wire"


async def sent_mean_logprob(
    base_url: str, vendor: str, model: str, prompt: str, max_tokens: int
) -> float | None:
    """The mean token logprob the simulator sends for `prompt` when asked for logprobs:
    the mean of `choices[0].logprobs.content[i].logprob` (OpenAI-compatible) or
    `candidates[0].avgLogprobs` (Gemini); None for vendors whose API has none."""
    url = base_url.rstrip("/") + SIMULATOR_PREFIX[vendor]
    async with httpx2.AsyncClient(timeout=10) as http:
        if vendor in ("openai", "deepseek", "openai-compatible"):
            res = await http.post(
                f"{url}/chat/completions",
                headers={"authorization": f"Bearer {KEY}"},
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "logprobs": True,
                },
            )
            res.raise_for_status()
            content = res.json()["choices"][0]["logprobs"]["content"]
            return math.fsum(t["logprob"] for t in content) / len(content)
        if vendor == "gemini":
            res = await http.post(
                f"{url}/v1/models/{model}:generateContent",
                headers={"x-goog-api-key": KEY},
                json={
                    "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                    "generationConfig": {"maxOutputTokens": max_tokens, "responseLogprobs": True},
                },
            )
            res.raise_for_status()
            return float(res.json()["candidates"][0]["avgLogprobs"])
    return None  # claude: no logprobs in the API; codex: a reasoning model, never asked

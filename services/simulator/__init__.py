"""Vendor simulator: Anthropic, OpenAI (also DeepSeek and OpenAI-compatible) and Gemini
wire protocols on one loopback HTTP server, for tests, the offline demo and benchmarks.

    swarm run simulator --port 8400 [--latency S] [--error-rate R] [--config FILE]

    async with Simulator(SimulatorConfig.from_toml("sim.toml")) as sim:
        AsyncAnthropic(api_key="k", base_url=f"{sim.base_url}/anthropic")
        AsyncOpenAI(api_key="k", base_url=f"{sim.base_url}/openai/v1")
        genai.Client(api_key="k", http_options={"base_url": f"{sim.base_url}/gemini"})

OpenAI-style SDK base URLs: /openai/v1, /deepseek/v1, /compat/v1 (`sim.vendor_urls()`).
Answers are deterministic; tokens are ceil(chars / 4); usage, prompt caching, streaming and
errors follow each vendor's format. Markers in a generation request force an outcome:
`[[sim:429]]`, `[[sim:500]]`, `[[sim:503]]`, `[[sim:529]]`, `[[sim:timeout]]`,
`[[sim:context]]`, `[[sim:quota]]`, `[[sim:latency=2.5]]` (see `faults`). Configuration:
see `config`. Control: GET /_sim/health, GET /_sim/stats, POST /_sim/reset (clears stats
and caches, re-seeds the RNG); GET /livez and /readyz answer 200 like every swarm image's.
"""

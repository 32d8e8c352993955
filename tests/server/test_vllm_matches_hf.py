"""Proof that the served adapter is the trained one: greedy tokens from vLLM equal transformers + PEFT."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from core.registry import AdapterRegistry
from server.engines.base import AdapterHandle, Sampling
from server.engines.hf_engine import HfEngine
from tests.server.test_e2e_openai import served_as_trained  # noqa: F401 - the sft/dpo aliases on @1

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

PROMPTS = ["Describe a 2-bed condo near downtown.", "Write a listing for a three-bedroom house with a garden."]
TOKENS = 32


def _vllm_greedy(live_server, model: str, prompt: str) -> list[str]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS,
            "temperature": 0, "logprobs": True}
    data = httpx.post(f"{live_server.v1}/chat/completions", json=body, timeout=120).json()
    return [entry["token"] for entry in data["choices"][0]["logprobs"]["content"]]


def _hf_greedy(engine: HfEngine, adapter: AdapterHandle | None, prompt: str) -> list[str]:
    from server.serving import render_chat

    text = render_chat(engine.tokenizer(), [{"role": "user", "content": prompt}])
    ids = engine.tokenizer()(text, add_special_tokens=False)["input_ids"]

    async def collect():
        tokens = []
        async for delta in engine.generate(ids, Sampling(max_tokens=TOKENS, temperature=0, logprobs=0), adapter, "t"):
            tokens += [lp.token for lp in delta.logprobs or []]
        return tokens

    return asyncio.run(collect())


def test_greedy_tokens_match_between_vllm_and_hf(live_server, base_model_dir, served_as_trained):
    sft = AdapterRegistry(live_server.registry_root).get("sft", 1)
    engine = HfEngine(base_model_dir, dtype="bfloat16")
    asyncio.run(engine.start())
    handle = AdapterHandle(sft.ref, 1, sft.path)
    asyncio.run(engine.load_adapter(handle))
    for prompt in PROMPTS:
        base_hf, sft_hf = _hf_greedy(engine, None, prompt), _hf_greedy(engine, handle, prompt)
        base_vllm, sft_vllm = _vllm_greedy(live_server, "base", prompt), _vllm_greedy(live_server, "sft@1", prompt)
        assert base_vllm == base_hf
        assert sft_vllm == sft_hf
        # The adapter really changes the output, so the match above cannot come from an ignored adapter.
        assert sft_hf != base_hf

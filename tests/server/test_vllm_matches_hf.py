"""Proof that the served adapter is the trained one: greedy tokens from vLLM equal transformers + PEFT.

Both engines run in float32 here. In bf16 the two use different kernels and near-ties in the logits flip (seen:
base diverged at token 7 of 32), which says nothing about whether the adapter is applied; in float32 they agree to
about 1e-3 nats, so any difference in the greedy tokens means a different model.
"""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from core.registry import AdapterRegistry
from server.engines.base import AdapterHandle, Sampling
from server.engines.hf_engine import HfEngine
from tests.helpers import start_server

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

PROMPTS = ["Describe a 2-bed condo near downtown.", "Write a listing for a three-bedroom house with a garden."]
TOKENS = 32


@pytest.fixture(scope="module")
def float32_server(tiny_registry, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("float32_server")
    registry = workdir / "adapters"
    shutil.copytree(tiny_registry, registry)
    server = start_server(workdir, registry, mount_arena=False, vllm={"dtype": "float32"})
    yield server
    server.stop()


def _vllm_greedy(server, model: str, prompt: str) -> list[str]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS,
            "temperature": 0, "logprobs": True}
    data = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120).json()
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


def test_greedy_tokens_match_between_vllm_and_hf(float32_server, base_model_dir):
    sft = AdapterRegistry(float32_server.registry_root).get("sft", 1)
    engine = HfEngine(base_model_dir, dtype="float32")
    asyncio.run(engine.start())
    handle = AdapterHandle(sft.ref, 1, sft.path)
    asyncio.run(engine.load_adapter(handle))
    for prompt in PROMPTS:
        base_hf, sft_hf = _hf_greedy(engine, None, prompt), _hf_greedy(engine, handle, prompt)
        base_vllm, sft_vllm = _vllm_greedy(float32_server, "base", prompt), _vllm_greedy(float32_server, "sft@1", prompt)
        assert base_vllm == base_hf
        assert sft_vllm == sft_hf
        # The adapter really changes the output, so the match above cannot come from an ignored adapter.
        assert sft_hf != base_hf

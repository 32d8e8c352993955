"""The `remote` engine against a real vLLM OpenAI server process: Palate's API, registry and preflight on top of
someone else's vLLM, with adapters loaded through vLLM's runtime LoRA endpoints."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers import start_raw_vllm, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.engine]


@pytest.fixture(scope="module")
def remote_stack(tiny_registry, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("remote")
    raw = start_raw_vllm(workdir / "vllm")
    try:
        palate = start_server(workdir / "palate", tiny_registry, args=("--engine", "remote", "--remote-url", raw.url),
                              mount_arena=False)
    except Exception:
        raw.stop()
        raise
    yield palate, raw
    palate.stop()
    raw.stop()


def test_openai_client_through_remote_engine(remote_stack):
    palate, raw = remote_stack
    client = openai.OpenAI(base_url=palate.v1, api_key="x", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "Describe a 2-bed condo near downtown."}]
    for model, served in (("base", "base"), ("sft", "sft@1"), ("dpo", "dpo@1")):
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
        assert reply.model == served and reply.choices[0].message.content
        assert reply.usage.completion_tokens > 0
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=messages, max_tokens=16, temperature=0, stream=True) if c.choices]
        assert "".join(pieces) == reply.choices[0].message.content
    # The adapters really live in the remote vLLM server, loaded at runtime by Palate.
    remote_models = {m["id"] for m in httpx.get(f"{raw.url}/v1/models").json()["data"]}
    assert {"sft@1", "dpo@1"} <= remote_models


def test_remote_scores_match_its_own_generation_logprobs(remote_stack):
    """score() through vLLM prompt log-probs agrees with the log-probs vLLM reported while generating."""
    import asyncio

    from server.engines.remote_engine import RemoteEngine
    from tests.helpers import BASE_MODEL_DIR

    palate, raw = remote_stack

    async def scenario():
        engine = RemoteEngine(raw.url, BASE_MODEL_DIR)
        await engine.start()
        try:
            from server.engines.base import Sampling

            prompt = engine.tokenizer()("A bright condo with", add_special_tokens=False)["input_ids"]
            tokens, logprobs = [], []
            async for delta in engine.generate(prompt, Sampling(max_tokens=6, temperature=0, logprobs=0), None, "r"):
                tokens += delta.token_ids
                logprobs += [lp.logprob for lp in delta.logprobs or []]
            scored = await engine.score(prompt, tokens, None)
            return logprobs, scored
        finally:
            await engine.shutdown()

    generated, scored = asyncio.run(scenario())
    assert len(scored) == len(generated) == 6
    assert max(abs(a - b) for a, b in zip(generated, scored)) < 0.05

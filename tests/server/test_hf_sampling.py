"""The hf reference engine implements vLLM's sampling fields (or refuses response_format), on the real base model in
process: no vLLM engine, a few forward passes each."""

from __future__ import annotations

import asyncio

import pytest

from server.engines.base import EngineRequestError, Sampling
from tests.helpers import BASE_MODEL_DIR

# With the chat template's default system turn, the base model answers greedily in ~30 tokens and stops (without it,
# it loops to any limit), so min_tokens and stop behaviour are observable.
PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def hf(base_model_dir):
    from server.engines.hf_engine import HfEngine

    engine = HfEngine(BASE_MODEL_DIR, max_model_len=1024, dtype="float32")
    asyncio.run(engine.start())
    return engine


def run(engine, sampling: Sampling, prompt=PROMPT):
    async def go():
        deltas = [d async for d in engine.generate(prompt, sampling, None, "t")]
        return ("".join(d.text for d in deltas), sum(len(d.token_ids) for d in deltas),
                next(d.finish_reason for d in deltas if d.finish_reason), deltas)

    return asyncio.run(go())


def test_hf_engine_fields(hf):
    ids = hf.tokenizer()(" condo", add_special_tokens=False)["input_ids"]
    condo = ids[0]
    greedy, greedy_tokens, finish, _ = run(hf, Sampling(max_tokens=40, temperature=0))
    assert finish == "stop" and greedy_tokens < 40
    word = hf.tokenizer().decode([condo]).strip()  # " condo" may be several tokens: its first one
    forced, _, _, _ = run(hf, Sampling(max_tokens=4, temperature=0, logit_bias={condo: 100.0}))
    assert forced.split() == [word] * 4
    stopped = run(hf, Sampling(max_tokens=4, temperature=0, logit_bias={condo: 100.0}, stop_token_ids=[condo]))
    assert stopped[1] == 1 and stopped[2] == "stop" and word not in stopped[0]
    assert run(hf, Sampling(max_tokens=40, temperature=0, ignore_eos=True))[1:3] == (40, "length")
    assert run(hf, Sampling(max_tokens=40, temperature=0, min_tokens=greedy_tokens + 5))[1] >= greedy_tokens + 5
    assert run(hf, Sampling(max_tokens=40, temperature=1.0, seed=3, top_k=1))[0] == greedy
    assert run(hf, Sampling(max_tokens=40, temperature=1.0, seed=3, min_p=1.0))[0] == greedy
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 1.5}):
        assert run(hf, Sampling(max_tokens=40, temperature=0, **penalty))[0] != greedy, penalty


def test_hf_prompt_logprobs_match_its_scores_and_structured_output_is_refused(hf):
    prompt_ids = hf.tokenizer()("A bright two-bedroom condo", add_special_tokens=False)["input_ids"]
    *_, deltas = run(hf, Sampling(max_tokens=1, temperature=0, prompt_logprobs=2), prompt=prompt_ids)
    entries = deltas[0].prompt_logprobs
    assert entries[0] is None and len(entries) == len(prompt_ids)
    scores = asyncio.run(hf.score(prompt_ids[:1], prompt_ids[1:], None))
    assert [e[0].token_id for e in entries[1:]] == prompt_ids[1:]
    assert [round(e[0].logprob, 4) for e in entries[1:]] == [round(s, 4) for s in scores]
    for sampling in (Sampling(json_object=True), Sampling(json_schema={"type": "object"})):
        with pytest.raises(EngineRequestError, match="response_format"):
            run(hf, sampling)
    with pytest.raises(EngineRequestError, match="out of vocabulary"):
        run(hf, Sampling(logit_bias={10**9: 1.0}))

"""Each sampling field on the real vLLM engine (the shared live server): it changes the output the way vLLM says,
or the structured output parses and matches its schema. The official openai client with content parts and
response_format; raw sockets get JSON answers."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.server.test_api_access import check_raw_cases

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

ASK = [{"role": "user", "content": "Describe a 2-bed condo near downtown with in-unit laundry."}]
SHORT = [{"role": "user", "content": "Say hello."}]
SCHEMA = {"type": "object", "properties": {"beds": {"type": "integer"}, "city": {"type": "string", "maxLength": 24}},
          "required": ["beds", "city"], "additionalProperties": False}


@pytest.fixture(scope="module")
def http(live_server):
    with httpx.Client(base_url=live_server.url, timeout=300) as client:
        yield client


def chat(http, messages=ASK, **fields) -> dict:
    response = http.post("/v1/chat/completions", json={"model": "base", "messages": messages, "temperature": 0,
                                                       "max_tokens": 48, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def text(reply: dict) -> str:
    return reply["choices"][0]["message"]["content"]


def first_token(http, word: str) -> tuple[int, str]:
    """The first token of `word` (" condo" may be several tokens) and its text."""
    ids = http.post("/tokenize", json={"prompt": word, "add_special_tokens": False}).json()["tokens"]
    piece = http.post("/detokenize", json={"tokens": ids[:1]}).json()["prompt"]
    return ids[0], piece


@pytest.mark.parametrize("field, value", [("frequency_penalty", 2.0), ("presence_penalty", 2.0),
                                          ("repetition_penalty", 1.3)])
def test_penalties_change_the_greedy_answer(http, field, value):
    plain = text(chat(http))
    assert text(chat(http, **{field: value})) != plain
    assert text(chat(http, **{field: {"frequency_penalty": 0.0, "presence_penalty": 0.0,
                                      "repetition_penalty": 1.0}[field]})) == plain


def off_top(reply: dict) -> int:
    """How many generated tokens were not (one of) the most likely token at their step, read from the logprobs."""
    tokens = reply["choices"][0]["logprobs"]["content"]
    return sum(t["logprob"] < max(c["logprob"] for c in t["top_logprobs"]) - 1e-6 for t in tokens)


@pytest.mark.parametrize("field, value", [("top_k", 1), ("min_p", 1.0)])
def test_top_k_1_and_min_p_1_keep_only_the_most_likely_token(http, field, value):
    # At temperature 1 some sampled tokens are not the step's most likely one; keeping only the most likely token
    # leaves none. (Token by token, not whole answers: bf16 logits tie often, and a tie is kept as a tie.)
    fields = {"temperature": 1.0, "logprobs": True, "top_logprobs": 3}
    assert sum(off_top(chat(http, seed=seed, **fields)) for seed in (1, 2)) > 0
    assert [off_top(chat(http, seed=seed, **fields, **{field: value})) for seed in (1, 2)] == [0, 0]


def test_min_tokens_and_ignore_eos_keep_generating(http):
    plain = chat(http, messages=SHORT, max_tokens=60)
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["usage"]["completion_tokens"] < 40
    longer = chat(http, messages=SHORT, max_tokens=60, min_tokens=40)
    assert longer["usage"]["completion_tokens"] >= 40
    endless = chat(http, messages=SHORT, max_tokens=60, ignore_eos=True)
    assert endless["usage"]["completion_tokens"] == 60 and endless["choices"][0]["finish_reason"] == "length"


def test_logit_bias_and_stop_token_ids(http):
    condo, piece = first_token(http, " condo")
    forced = chat(http, max_tokens=6, logit_bias={str(condo): 100})
    assert text(forced).split() == [piece.strip()] * 6
    stopped = chat(http, max_tokens=6, logit_bias={str(condo): 100}, stop_token_ids=[condo])
    assert stopped["choices"][0]["finish_reason"] == "stop" and stopped["usage"]["completion_tokens"] == 1
    assert piece.strip() not in text(stopped)


def test_max_completion_tokens_bounds_the_answer(http):
    reply = chat(http, max_tokens=40, max_completion_tokens=5)
    assert reply["usage"]["completion_tokens"] == 5 and reply["choices"][0]["finish_reason"] == "length"


def test_prompt_logprobs_and_echo_on_completions(http):
    prompt = "A bright two-bedroom condo"
    ids = http.post("/tokenize", json={"prompt": prompt, "add_special_tokens": False}).json()["tokens"]
    scored = http.post("/v1/completions", json={"model": "sft", "prompt": prompt, "max_tokens": 2,
                                                "temperature": 0, "prompt_logprobs": 2}).json()
    entries = scored["choices"][0]["prompt_logprobs"]
    assert len(entries) == len(ids) and entries[0] is None
    for token, entry in zip(ids[1:], entries[1:]):
        assert str(token) in entry and 2 <= len(entry) <= 3
        assert all(v["logprob"] <= 0 and v["rank"] >= 1 for v in entry.values())
    echoed = http.post("/v1/completions", json={"model": "base", "prompt": prompt, "max_tokens": 3, "temperature": 0,
                                                "echo": True, "logprobs": 1}).json()["choices"][0]
    assert echoed["text"].startswith(prompt) and len(echoed["text"]) > len(prompt)
    assert echoed["logprobs"]["token_logprobs"][0] is None
    assert len(echoed["logprobs"]["tokens"]) == len(ids) + 3
    plain = http.post("/v1/completions", json={"model": "base", "prompt": prompt, "max_tokens": 3,
                                               "temperature": 0}).json()["choices"][0]
    assert echoed["text"] == prompt + plain["text"]


def test_openai_client_with_content_parts_and_response_format(live_server):
    client = openai.OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=300)
    parts = [{"type": "text", "text": "Describe a 2-bed condo"}, {"type": "text", "text": "near downtown."}]
    with_parts = client.chat.completions.create(model="base", messages=[{"role": "user", "content": parts}],
                                                max_tokens=24, temperature=0)
    joined = client.chat.completions.create(model="base", max_tokens=24, temperature=0, messages=[
        {"role": "user", "content": "Describe a 2-bed condo\nnear downtown."}])
    assert with_parts.choices[0].message.content == joined.choices[0].message.content
    ask = [{"role": "user", "name": "ann",
            "content": "Give the beds and city of: 2-bed condo in Boston. Answer in JSON."}]
    schema = client.chat.completions.create(
        model="sft", messages=ask, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "listing", "schema": SCHEMA}})
    jsonschema.validate(json.loads(schema.choices[0].message.content), SCHEMA)
    free = client.chat.completions.create(model="sft", messages=ask, max_tokens=60, temperature=0)
    assert free.choices[0].message.content != schema.choices[0].message.content
    obj = client.chat.completions.create(model="base", messages=ask, max_tokens=120, temperature=0,
                                         response_format={"type": "json_object"})
    if obj.choices[0].finish_reason == "stop":  # a grammar-complete object; at the length limit it is cut short
        assert isinstance(json.loads(obj.choices[0].message.content), dict)
    else:
        assert obj.choices[0].message.content.lstrip().startswith("{")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="base", messages=ask, tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert refused.value.body["param"] == "tools"


def test_raw_socket_against_the_real_server(live_server):
    check_raw_cases(int(live_server.url.rsplit(":", 1)[1]))
    assert httpx.get(f"{live_server.url}/health").status_code == 200


def test_a_schema_the_grammar_engine_cannot_compile_is_a_400_and_the_server_goes_on(http):
    for stream in (False, True):
        response = http.post("/v1/chat/completions", json={
            "model": "base", "messages": ASK, "max_tokens": 8, "stream": stream,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"]
    assert text(chat(http, max_tokens=4))

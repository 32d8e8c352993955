"""Every request field works or is refused by name (fake engine: what reaches the engine, and every 400)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from server.engines.base import Delta, EngineError
from server.request_checks import UNSUPPORTED
from tests.arena.fakes import FakeEngine, FakeTokenizer, make_app, make_config

MESSAGES = [{"role": "user", "content": "Describe a condo"}]


def _post(app, path: str, body, **kwargs) -> httpx.Response:
    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                return await client.post(path, json=body, **kwargs)

    return asyncio.run(go())


class VocabTokenizer(FakeTokenizer):
    """The arena's fake tokenizer plus what /tokenize and /detokenize use: a vocabulary of 100 ids."""

    def __len__(self) -> int:
        return 100

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [f"t{i}" for i in ids]


class VocabFakeEngine(FakeEngine):
    def __init__(self):
        super().__init__()
        self._tokenizer = VocabTokenizer()


@pytest.fixture
def engine():
    return VocabFakeEngine()


@pytest.fixture
def app(tmp_path, engine):
    return make_app(make_config(tmp_path), engine)


def _error(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_sampling_fields_reach_the_engine(app, engine):
    body = {"model": "base", "messages": MESSAGES, "frequency_penalty": 1.5, "presence_penalty": -0.5,
            "repetition_penalty": 1.3, "top_k": 7, "min_p": 0.2, "min_tokens": 2, "max_completion_tokens": 9,
            "logit_bias": {"5": 150, "6": -3}, "stop_token_ids": [3, 4], "ignore_eos": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}
    assert _post(app, "/v1/chat/completions", body).status_code == 200
    sampling = engine.requests[-1][2]
    assert (sampling.frequency_penalty, sampling.presence_penalty, sampling.repetition_penalty) == (1.5, -0.5, 1.3)
    assert (sampling.top_k, sampling.min_p, sampling.min_tokens, sampling.max_tokens) == (7, 0.2, 2, 9)
    assert sampling.logit_bias == {5: 100.0, 6: -3.0}  # clamped to [-100, 100], as vLLM does
    assert sampling.stop_token_ids == [3, 4] and sampling.ignore_eos
    assert sampling.json_schema == {"type": "object"} and not sampling.json_object


def test_completion_fields_reach_the_engine(app, engine):
    body = {"model": "base", "prompt": "A bright condo", "max_tokens": 4, "prompt_logprobs": 2,
            "response_format": {"type": "json_object"}, "top_k": 3}
    _post(app, "/v1/completions", body)  # the fake engine returns no prompt log-probs: the answer is a 500
    sampling = engine.requests[-1][2]
    assert sampling.prompt_logprobs == 2 and sampling.json_object and sampling.top_k == 3


@pytest.mark.parametrize("field, value", [
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "auto"),
    ("functions", [{"name": "f"}]), ("function_call", "auto"), ("audio", {"voice": "alloy"}),
    ("modalities", ["text", "audio"]), ("reasoning_effort", "low"), ("store", True), ("use_beam_search", True),
    ("structured_outputs", {"json": {}}), ("prompt_logprobs", 1), ("echo", True), ("web_search_options", {}),
])
def test_unsupported_chat_fields_are_400_naming_the_field(app, field, value):
    error = _error(_post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES, field: value}))
    assert error["param"] == field and error["code"] == "unsupported_field"
    assert f"'{field}' is not supported" in error["message"]


def test_every_refused_field_has_a_reason_and_no_op_values_pass(app):
    for kind, table in UNSUPPORTED.items():
        for field, (_, reason) in table.items():
            assert reason, (kind, field)
    body = {"model": "base", "messages": MESSAGES, "tools": [], "tool_choice": "none", "modalities": ["text"],
            "store": False, "parallel_tool_calls": True, "use_beam_search": False, "audio": None}
    assert _post(app, "/v1/chat/completions", body).status_code == 200


@pytest.mark.parametrize("field, value", [("suffix", "end"), ("best_of", 3), ("use_beam_search", True)])
def test_unsupported_completion_fields_are_400(app, field, value):
    error = _error(_post(app, "/v1/completions", {"model": "base", "prompt": "x", field: value}))
    assert error["param"] == field and error["code"] == "unsupported_field"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"model": "base", "messages": MESSAGES, "frobnicate": 1}, "frobnicate"),
    ("/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": "x", "mood": "happy"}]},
     "messages[0].mood"),
    ("/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x", "cache_control": {}}]}]}, "messages[0].content[0].cache_control"),
    ("/v1/completions", {"model": "base", "prompt": "x", "temprature": 0}, "temprature"),
    ("/tokenize", {"prompt": "x", "extra": 1}, "extra"),
])
def test_unknown_fields_are_400_naming_them(app, path, body, param):
    error = _error(_post(app, path, body))
    assert error["param"] == param and error["code"] == "unknown_field"
    assert "Unrecognized request argument supplied" in error["message"] and "unknown_fields: ignore" in error["message"]


def test_unknown_fields_can_be_ignored_by_config_and_are_listed(tmp_path, engine):
    config = make_config(tmp_path)
    config.server.unknown_fields = "ignore"
    app = make_app(config, engine)
    response = _post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES, "frobnicate": 1})
    assert response.status_code == 200
    assert response.headers["x-palate-ignored-fields"] == "frobnicate"
    # ignoring unknown fields never lets a known-unsupported one through
    assert _post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES,
                                               "tools": [{"type": "function"}]}).status_code == 400


def test_content_parts_are_joined_and_name_is_passed_to_the_template(app, engine):
    body = {"model": "base", "messages": [{"role": "user", "name": "ann", "content": [
        {"type": "text", "text": "two bed"}, {"type": "text", "text": "condo"}]}]}
    assert _post(app, "/v1/chat/completions", body).status_code == 200
    parts = engine.requests[-1]
    plain = _post(app, "/v1/chat/completions", {"model": "base", "messages": [
        {"role": "user", "content": "two bed\ncondo"}]})
    assert plain.status_code == 200
    # the fake tokenizer counts words: the parts rendered exactly as the joined string
    assert engine.requests[-1][2].max_tokens == parts[2].max_tokens


@pytest.mark.parametrize("part, words", [
    ({"type": "image_url", "image_url": {"url": "http://x/y.png"}}, "takes no images"),
    ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "takes no audio"),
    ({"type": "hologram"}, "unknown content part type"),
])
def test_non_text_content_parts_are_refused(app, part, words):
    body = {"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]}
    error = _error(_post(app, "/v1/chat/completions", body))
    assert error["param"] == "messages[0].content[1].type" and words in error["message"]


@pytest.mark.parametrize("role", ["tool", "function"])
def test_tool_and_function_roles_say_tools_are_not_supported(app, role):
    body = {"model": "base", "messages": [{"role": role, "content": "42", "tool_call_id": "c1"}]}
    error = _error(_post(app, "/v1/chat/completions", body))
    assert error["param"] == "messages[0].role" and "tool" in error["message"]


@pytest.mark.parametrize("extra, param, words", [
    ({"min_tokens": 50, "max_tokens": 10}, "min_tokens", "more than max_tokens=10"),
    ({"logit_bias": {"abc": 1}}, "logit_bias", "not an integer"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema",
     "needs json_schema.schema"),
    ({"response_format": {"type": "structural_tag"}}, "response_format.type", "not supported"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream=true"),
])
def test_inconsistent_values_are_400(app, extra, param, words):
    error = _error(_post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES, **extra}))
    assert error["param"] == param and words in error["message"]


@pytest.mark.parametrize("extra", [{"frequency_penalty": 2.5}, {"presence_penalty": -3}, {"repetition_penalty": 0},
                                   {"top_k": -2}, {"min_p": 1.5}, {"min_tokens": -1}, {"top_logprobs": 21}])
def test_values_outside_vllms_ranges_are_schema_errors_naming_the_field(app, extra):
    error = _error(_post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES, **extra}), 422)
    assert error["param"] == next(iter(extra))


def test_prompt_logprobs_with_stream_is_400(app):
    error = _error(_post(app, "/v1/completions", {"model": "base", "prompt": "x", "prompt_logprobs": 1,
                                                  "stream": True}))
    assert error["param"] == "prompt_logprobs"


class _BreaksMidStream(FakeEngine):
    async def generate(self, prompt, sampling, adapter, request_id):  # noqa: ANN001
        yield Delta(index=0, text="Bright", token_ids=[1], prompt_tokens=3)
        raise EngineError("the engine fell over")


class _RefusesAtOnce(FakeEngine):
    async def generate(self, prompt, sampling, adapter, request_id):  # noqa: ANN001
        from server.engines.base import EngineRequestError

        raise EngineRequestError("this engine cannot do response_format")
        yield  # pragma: no cover - makes this an async generator


def test_a_stream_failing_mid_way_ends_with_an_error_event(tmp_path):
    app = make_app(make_config(tmp_path), _BreaksMidStream())
    response = _post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES, "stream": True})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Bright"
    assert "the engine fell over" in json.loads(events[-2])["error"]["message"] and events[-1] == "[DONE]"


def test_an_engine_refusal_before_any_output_is_a_400_even_when_streaming(tmp_path):
    app = make_app(make_config(tmp_path), _RefusesAtOnce())
    for stream in (False, True):
        error = _error(_post(app, "/v1/chat/completions", {"model": "base", "messages": MESSAGES, "stream": stream}))
        assert "cannot do response_format" in error["message"]


def test_tokenize_and_detokenize(app, engine):
    prompt = _post(app, "/tokenize", {"prompt": "two bed condo"}).json()
    assert prompt["tokens"] == [3, 3, 5] and prompt["count"] == 3 and prompt["max_model_len"] == engine.max_model_len
    chat = _post(app, "/tokenize", {"model": "sft", "messages": MESSAGES}).json()
    assert chat["count"] == len(engine.tokenizer().apply_chat_template(MESSAGES).split())
    assert _post(app, "/detokenize", {"tokens": [1, 2]}).json() == {"prompt": "w w"}
    assert _error(_post(app, "/detokenize", {"tokens": [1, 100]}))["param"] == "tokens"
    assert _error(_post(app, "/tokenize", {"model": "nope", "prompt": "x"}), 404)["param"] == "model"
    assert _error(_post(app, "/tokenize", {"messages": [{"role": "tool", "content": "x"}]}))["param"] == \
        "messages[0].role"


def test_the_remote_engine_passes_every_field_under_vllms_name():
    from server.engines.base import Sampling
    from server.engines.remote_engine import RemoteEngine

    engine = RemoteEngine("http://vllm", Path("."))  # builds the body only; no call is made

    body = engine.request_body([1, 2], Sampling(frequency_penalty=1.0, presence_penalty=0.5, repetition_penalty=1.2,
                                                top_k=5, min_p=0.1, min_tokens=3, logit_bias={7: -1.0},
                                                stop_token_ids=[9], ignore_eos=True,
                                                json_schema={"type": "object"}), None)
    assert {k: body[k] for k in ("frequency_penalty", "presence_penalty", "repetition_penalty", "top_k", "min_p",
                                 "min_tokens", "logit_bias", "stop_token_ids", "ignore_eos")} == {
        "frequency_penalty": 1.0, "presence_penalty": 0.5, "repetition_penalty": 1.2, "top_k": 5, "min_p": 0.1,
        "min_tokens": 3, "logit_bias": {"7": -1.0}, "stop_token_ids": [9], "ignore_eos": True}
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"} and body["stream"]
    scored = engine.request_body([1, 2], Sampling(prompt_logprobs=1), None)
    assert scored["prompt_logprobs"] == 1 and "stream" not in scored  # vLLM has prompt log-probs only unstreamed

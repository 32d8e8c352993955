"""The server's API contract against a fake engine: errors, admin auth, aliases, hot-swap draining."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.arena.fakes import FakeEngine, make_app, make_config, write_tiny_adapter


@pytest.fixture
def app_and_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "secret")
    engine = FakeEngine()
    app = make_app(make_config(tmp_path), engine)
    return app, engine


async def _client(app):
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def _chat(model="base", **extra):
    return {"model": model, "messages": [{"role": "user", "content": "Describe a condo"}], **extra}


def run(coro):
    return asyncio.run(coro)


async def _with_app(app, body):
    async with app.router.lifespan_context(app):
        async with await _client(app) as client:
            return await body(client)


def test_models_lists_base_versions_and_aliases_with_lineage(app_and_engine):
    app, _ = app_and_engine

    async def body(client):
        return (await client.get("/v1/models")).json()

    data = run(_with_app(app, body))["data"]
    ids = [m["id"] for m in data]
    assert ids == ["base", "dpo@1", "sft@1", "dpo", "sft"]
    dpo = next(m for m in data if m["id"] == "dpo")
    assert dpo["root"] == "dpo@1"
    assert dpo["palate"]["rank"] == 2 and dpo["palate"]["target_modules"] == ["q_proj"]
    assert dpo["palate"]["lineage"][-1] == {"ref": "base"}


def test_unknown_model_is_404_listing_available_in_openai_shape(app_and_engine):
    app, _ = app_and_engine

    async def body(client):
        return await client.post("/v1/chat/completions", json=_chat("nope"))

    response = run(_with_app(app, body))
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "base" in error["message"] and "sft@1" in error["message"] and "dpo" in error["message"]


@pytest.mark.parametrize("extra, status, code", [
    ({"max_tokens": 10_000}, 400, "max_tokens_too_large"),
    ({"temperature": 3}, 422, "invalid_schema"),
    ({"messages": []}, 422, "invalid_schema"),
    ({"top_logprobs": 3}, 400, None),
])
def test_bad_parameters(app_and_engine, extra, status, code):
    app, _ = app_and_engine

    async def body(client):
        return await client.post("/v1/chat/completions", json={**_chat(), **extra})

    response = run(_with_app(app, body))
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_prompt_longer_than_context_is_400_naming_the_limit(app_and_engine):
    app, engine = app_and_engine
    engine.max_model_len = 8

    async def body(client):
        return await client.post("/v1/chat/completions", json=_chat(messages=[
            {"role": "user", "content": "word " * 50}]))

    response = run(_with_app(app, body))
    assert response.status_code == 400
    assert "context of 8 tokens" in response.json()["error"]["message"]


def test_chat_completion_and_stream_report_usage(app_and_engine):
    app, _ = app_and_engine

    async def body(client):
        plain = (await client.post("/v1/chat/completions", json=_chat("sft", max_tokens=20))).json()
        events = []
        async with client.stream("POST", "/v1/chat/completions",
                                 json=_chat("sft", stream=True, stream_options={"include_usage": True})) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
        return plain, events

    plain, events = run(_with_app(app, body))
    assert plain["model"] == "sft@1" and plain["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] > 0
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]


def test_admin_disabled_without_token_and_401_with_wrong_token(tmp_path, monkeypatch):
    monkeypatch.delenv("PALATE_ADMIN_TOKEN", raising=False)
    app = make_app(make_config(tmp_path))

    async def body(client):
        disabled = await client.post("/admin/aliases", json={"alias": "x", "target": "sft@1"})
        return disabled

    assert run(_with_app(app, body)).status_code == 403
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "secret")

    async def body2(client):
        missing = await client.post("/admin/aliases", json={"alias": "x", "target": "sft@1"})
        wrong = await client.post("/admin/aliases", json={"alias": "x", "target": "sft@1"},
                                  headers={"Authorization": "Bearer nope"})
        return missing, wrong

    missing, wrong = run(_with_app(app, body2))
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_admin_token"


def test_load_path_outside_root_is_rejected(app_and_engine, tmp_path):
    app, _ = app_and_engine
    outside = write_tiny_adapter(tmp_path / "elsewhere" / "x" / "1")
    auth = {"Authorization": "Bearer secret"}

    async def body(client):
        escape = await client.post("/admin/adapters", json={"path": "../elsewhere/x/1"}, headers=auth)
        absolute = await client.post("/admin/adapters", json={"path": str(outside)}, headers=auth)
        still = await client.post("/v1/chat/completions", json=_chat())
        return escape, absolute, still

    escape, absolute, still = run(_with_app(app, body))
    assert escape.status_code == 400 and escape.json()["error"]["code"] == "path_outside_root"
    assert absolute.status_code == 400
    assert still.status_code == 200


def test_symlink_escape_is_rejected(app_and_engine, tmp_path):
    app, _ = app_and_engine
    outside = write_tiny_adapter(tmp_path / "elsewhere" / "evil" / "1")
    link = tmp_path / "adapters" / "evil"
    link.symlink_to(outside.parent)

    async def body(client):
        return await client.post("/admin/adapters", json={"path": "evil/1"}, headers={"Authorization": "Bearer secret"})

    response = run(_with_app(app, body))
    assert response.status_code == 400 and response.json()["error"]["code"] == "path_outside_root"


def test_hot_swap_drains_inflight_requests_on_the_old_version(tmp_path, monkeypatch):
    """A request that started on sft@1 finishes on sft@1 while the alias moves to sft@2 and sft@1 is unloaded."""
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "secret")
    engine = FakeEngine(delay_s=0.02)
    config = make_config(tmp_path)
    app = make_app(config, engine)
    registry_root = config.server.adapter_root
    from core.registry import AdapterRegistry

    registry = AdapterRegistry(registry_root)
    old_meta = registry.get("sft", 1).meta
    registry.add("sft", write_tiny_adapter(tmp_path / "src-sft2", seed=7),
                 {"kind": "sft", "base_model": old_meta["base_model"]}, move_alias=False)
    auth = {"Authorization": "Bearer secret"}

    async def body(client):
        slow = asyncio.create_task(client.post("/v1/chat/completions", json=_chat("sft", max_tokens=100)))
        await asyncio.sleep(0.05)  # the request is now streaming on sft@1
        load = await client.post("/admin/adapters", json={"ref": "sft@2", "alias": "sft"}, headers=auth)
        unload = asyncio.create_task(client.delete("/admin/adapters/sft@1", headers=auth))
        await asyncio.sleep(0.05)
        assert not unload.done(), "unload must wait for the in-flight request"
        after = await client.post("/v1/chat/completions", json=_chat("sft", max_tokens=5))
        return await slow, load, await unload, after

    slow, load, unload, after = run(_with_app(app, body))
    assert slow.status_code == 200 and slow.json()["model"] == "sft@1"
    assert load.status_code == 200 and load.json()["aliases"]["sft"] == "sft@2"
    assert unload.status_code == 200
    assert after.json()["model"] == "sft@2"
    lora_ids = {ref: lid for ref, lid in ((h.ref, h.lora_id) for h in engine.loaded.values())}
    assert "sft@1" not in lora_ids and "sft@2" in lora_ids
    assert registry.aliases()["sft"] == "sft@2"  # persisted, so a restart serves the same thing


def test_a_dead_engine_turns_health_503_and_every_answer_says_restart(app_and_engine):
    app, engine = app_and_engine

    async def body(client):
        before = await client.get("/health")
        engine.died = "the vLLM engine core died (EngineDeadError); restart `palate serve`"
        health = await client.get("/health")
        plain = await client.post("/v1/chat/completions", json=_chat())
        stream = await client.post("/v1/chat/completions", json=_chat(stream=True))
        return before, health, plain, stream

    before, health, plain, stream = run(_with_app(app, body))
    assert before.status_code == 200 and before.json()["status"] == "ok"
    assert health.status_code == 503 and "restart `palate serve`" in health.json()["error"]["message"]
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "engine_dead"
    # A stream that had not started answers with the status itself, never a 200 that ends as if it had finished.
    assert stream.status_code == 503 and stream.json()["error"]["code"] == "engine_dead"
    assert "restart" in stream.json()["error"]["message"]

"""Who may call what (API keys), request ids, and requests that must never break a connection (fake engine)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from fastapi import Request

from server.auth import key_id, parse_env
from tests.arena.fakes import FakeEngine, make_app, make_config
from tests.helpers import free_port

CHAT = {"model": "base", "messages": [{"role": "user", "content": "Describe a condo"}], "max_tokens": 4}


def _keyed_app(tmp_path, monkeypatch, keys: str | None = "alice:sk-alice,sk-bare"):
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "admin-secret")
    if keys is None:
        monkeypatch.delenv("PALATE_API_KEYS", raising=False)
    else:
        monkeypatch.setenv("PALATE_API_KEYS", keys)
    app = make_app(make_config(tmp_path), FakeEngine())

    @app.get("/v1/_whoami")  # a probe of what admission control reads
    async def whoami(request: Request):
        return {"api_key_id": request.state.api_key_id, "request_id": request.state.request_id}

    @app.get("/v1/_boom")
    async def boom():
        raise RuntimeError("a bug")

    return app


def _calls(app, *requests):
    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                         base_url="http://test") as client:
                return [await client.request(method, path, **kwargs) for method, path, kwargs in requests]

    return asyncio.run(go())


def test_api_keys_guard_v1_and_tokenize_but_not_health_or_docs(tmp_path, monkeypatch):
    app = _keyed_app(tmp_path, monkeypatch)
    bearer = lambda key: {"headers": {"Authorization": f"Bearer {key}"}}  # noqa: E731
    none, wrong, alice, bare, admin, tokenize, health, docs, metrics = _calls(
        app, ("POST", "/v1/chat/completions", {"json": CHAT}),
        ("POST", "/v1/chat/completions", {"json": CHAT, **bearer("sk-nope")}),
        ("GET", "/v1/_whoami", bearer("sk-alice")), ("GET", "/v1/_whoami", bearer("sk-bare")),
        ("GET", "/v1/_whoami", bearer("admin-secret")), ("POST", "/tokenize", {"json": {"prompt": "x"}}),
        ("GET", "/health", {}), ("GET", "/openapi.json", {}), ("GET", "/metrics", {}))
    for response in (none, wrong, tokenize):
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer" and response.headers["x-request-id"]
    assert "Missing API key" in none.json()["error"]["message"]
    assert "Incorrect API key" in wrong.json()["error"]["message"]
    assert alice.json()["api_key_id"] == "alice"
    assert bare.json()["api_key_id"] == key_id("sk-bare") and bare.json()["api_key_id"].startswith("key-")
    assert admin.json()["api_key_id"] == "admin"
    assert health.status_code == docs.status_code == metrics.status_code == 200


def test_the_in_process_ui_has_its_own_key(tmp_path, monkeypatch):
    app = _keyed_app(tmp_path, monkeypatch)
    key = app.state.api_keys.ui_key
    assert key and key not in ("sk-alice", "sk-bare")
    (whoami,) = _calls(app, ("GET", "/v1/_whoami", {"headers": {"Authorization": f"Bearer {key}"}}))
    assert whoami.json()["api_key_id"] == "arena-ui"


def test_without_keys_everything_is_open_and_the_id_is_none(tmp_path, monkeypatch):
    app = _keyed_app(tmp_path, monkeypatch, keys=None)
    assert app.state.api_keys.ui_key is None
    chat, whoami = _calls(app, ("POST", "/v1/chat/completions", {"json": CHAT}), ("GET", "/v1/_whoami", {}))
    assert chat.status_code == 200 and whoami.json()["api_key_id"] is None


def test_config_keys_and_env_parsing(tmp_path, monkeypatch):
    assert parse_env(" a:k1 , k2 ,") == {"a": "k1", key_id("k2"): "k2"}
    monkeypatch.delenv("PALATE_API_KEYS", raising=False)
    config = make_config(tmp_path)
    config.server.api_keys = {"bob": "sk-bob"}
    app = make_app(config, FakeEngine())
    ok, no = _calls(app, ("GET", "/v1/models", {"headers": {"Authorization": "Bearer sk-bob"}}),
                    ("GET", "/v1/models", {}))
    assert ok.status_code == 200 and no.status_code == 401


def test_request_ids_come_back_and_an_escaped_exception_is_an_openai_500(tmp_path, monkeypatch):
    app = _keyed_app(tmp_path, monkeypatch, keys=None)
    given, boom, fresh = _calls(app, ("GET", "/v1/_whoami", {"headers": {"X-Request-Id": "trace-42"}}),
                                ("GET", "/v1/_boom", {}), ("GET", "/v1/_whoami", {"headers": {"X-Request-Id": "b a d"}}))
    assert given.headers["x-request-id"] == "trace-42" and given.json()["request_id"] == "trace-42"
    assert fresh.headers["x-request-id"].startswith("req-")  # an unsafe id is replaced, never echoed
    assert boom.status_code == 500 and boom.json()["error"]["type"] == "internal_server_error"
    assert boom.headers["x-request-id"] in boom.json()["error"]["message"]


@pytest.mark.parametrize("raw, where", [
    ('{"model": "base", "messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content"),
    ('{"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udfff"}]}]}',
     "messages[0].content[0].text"),
    ('{"model": "base", "messages": [{"role": "user", "content": "x"}], "\\ud800": 1}', "<key>"),
])
def test_lone_surrogates_are_400_naming_where(tmp_path, monkeypatch, raw, where):
    app = _keyed_app(tmp_path, monkeypatch, keys=None)
    (response,) = _calls(app, ("POST", "/v1/chat/completions",
                               {"content": raw, "headers": {"content-type": "application/json"}}))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_unicode" and response.json()["error"]["param"] == where
    pair = '{"model": "base", "messages": [{"role": "user", "content": "\\ud83d\\ude00 condo"}], "max_tokens": 2}'
    (ok,) = _calls(app, ("POST", "/v1/chat/completions", {"content": pair,
                                                         "headers": {"content-type": "application/json"}}))
    assert ok.status_code == 200  # a surrogate *pair* is an ordinary emoji


# ---- raw sockets against a real uvicorn server (fake engine) ------------------------------------------------------
def raw_post(port: int, path: str, body: bytes, extra_headers: str = "") -> tuple[int, dict, bytes]:
    """POST over a plain socket and read the whole answer; a reset connection raises ConnectionResetError."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra_headers}\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


RAW_CASES = [
    (b'{"model": "base", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "invalid_unicode"),
    (b'{"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}',
     400, "unsupported_content"),
    (b'{"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 3}',
     200, None),
    (b'{"model": "base", "messages": [', 422, "invalid_schema"),
    (b'\xff\xfe{"model": 1}', 422, "invalid_schema"),
]


def check_raw_cases(port: int) -> None:
    for body, status, code in RAW_CASES:
        got, headers, payload = raw_post(port, "/v1/chat/completions", body)
        assert got == status, (body, got, payload[:300])
        assert headers["content-type"].startswith("application/json") and headers["x-request-id"]
        decoded = json.loads(payload)
        if code:
            assert decoded["error"]["code"] == code, decoded
        else:
            assert decoded["choices"][0]["message"]["content"]


def test_raw_socket_requests_get_json_answers_never_a_reset(tmp_path, monkeypatch):
    import uvicorn

    monkeypatch.delenv("PALATE_API_KEYS", raising=False)
    app = make_app(make_config(tmp_path), FakeEngine())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        check_raw_cases(port)
    finally:
        server.should_exit = True
        thread.join(10)

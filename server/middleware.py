"""ASGI middleware that holds for every request, before any route runs.

- `RequestContext` (outermost): gives each request an id (the client's `X-Request-Id` when it is a sane token,
  else a new one) on `request.state.request_id` and in the `x-request-id` response header; logs every 4xx/5xx
  answer with it; and catches whatever escaped the app: an OpenAI-shaped 500 if nothing was sent yet, a clean end
  of the body if a response had started, never an exception in the ASGI server (which resets the connection).
- `ApiKeyGuard`: with API keys on (server/auth.py), protected paths need a valid key (401 otherwise); the key's id
  goes on `request.state.api_key_id`.
- `UnicodeGuard`: a JSON body holding a lone UTF-16 surrogate (`"\\ud800"`) is a 400 naming where it is; Python
  decodes such JSON into strings that cannot be encoded again, which would break tokenizers and error responses.

They are plain ASGI (not `BaseHTTPMiddleware`), so streaming responses and client disconnects pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from server.auth import ApiKeys
from server.errors import error_body

log = logging.getLogger("palate.server")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHECKED_BODY_PATHS = ("/v1/", "/tokenize", "/detokenize", "/admin/")
_MAX_CHECKED_BODY = 16 * 1024 * 1024


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:  # noqa: ANN001
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


def _state(scope: dict) -> dict:
    return scope.setdefault("state", {})


class RequestContext:
    def __init__(self, app):  # noqa: ANN001 - ASGI app
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else f"req-{uuid.uuid4().hex}"
        _state(scope)["request_id"] = request_id
        started: dict[str, Any] = {}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - the last line of defence: the client gets an answer, the log the cause
            log.exception("request %s: %s %s failed", request_id, scope.get("method"), scope.get("path"))
            if "status" not in started:
                started["status"] = 500
                await _send_json(send, 500, error_body(
                    500, f"Internal error; the server keeps serving. Quote request id {request_id} when reporting."),
                    [(b"x-request-id", request_id.encode())])
            else:  # a stream had begun: end it rather than reset the connection
                try:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except Exception:  # noqa: BLE001 - the client is gone
                    pass
        status = started.get("status", 0)
        if status >= 400:
            log.log(logging.ERROR if status >= 500 else logging.INFO, "request %s: %s %s -> %d", request_id,
                    scope.get("method"), scope.get("path"), status)


class ApiKeyGuard:
    def __init__(self, app, keys: ApiKeys):  # noqa: ANN001 - ASGI app
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        _state(scope)["api_key_id"] = None
        if self.keys.enabled and self.keys.protects(scope.get("path", "")):
            header = dict(scope.get("headers") or []).get(b"authorization")
            found = self.keys.identify(header.decode("latin-1") if header else None)
            if found is None:
                message = ("Missing API key: send 'Authorization: Bearer <key>'." if not header else
                           "Incorrect API key provided.") + " This server requires an API key (server.api_keys)."
                return await _send_json(send, 401, error_body(401, message, code="invalid_api_key"),
                                        [(b"www-authenticate", b"Bearer")])
            _state(scope)["api_key_id"] = found
        await self.app(scope, receive, send)


def lone_surrogate_at(value: Any) -> str | None:
    """Where in decoded JSON a lone surrogate sits (`messages[0].content`), or None. Iterative: no recursion limit."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"{path}.<key>" if path else "<key>"
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


class UnicodeGuard:
    def __init__(self, app):  # noqa: ANN001 - ASGI app
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if (scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH")
                or not scope.get("path", "").startswith(_CHECKED_BODY_PATHS)):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if size <= _MAX_CHECKED_BODY:
            try:
                where = lone_surrogate_at(json.loads(body))
            except Exception:  # noqa: BLE001 - not JSON: the route's own parser answers
                where = None
            if where is not None:
                return await _send_json(send, 400, error_body(
                    400, f"The request holds a lone UTF-16 surrogate (such as \\ud800) at {where}: that is not "
                         "valid Unicode text. Send valid UTF-8 (surrogates only in pairs).", param=where,
                    code="invalid_unicode"))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the route expects

        await self.app(scope, replay, send)

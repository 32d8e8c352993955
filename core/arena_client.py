"""HTTP client of the arena API: what the Gradio UI and `palate loop`'s simulated voters use. The UI never touches
the engine or the database, so it runs inside the server process or on another machine (`palate arena --server
URL`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from core.arena_config import UI_VERSION


class ArenaClientError(RuntimeError):
    """The server refused a request; `message` is its OpenAI-format error message, `status` the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(response: httpx.Response, body: bytes | None = None) -> ArenaClientError:
    raw = body if body is not None else response.content
    try:
        message = json.loads(raw)["error"]["message"]
    except Exception:  # noqa: BLE001 - not our error format: show the status line
        message = f"HTTP {response.status_code}: {raw[:200].decode('utf-8', 'replace')}"
    return ArenaClientError(response.status_code, message)


async def _sse(response: httpx.Response) -> AsyncIterator[dict]:
    async for line in response.aiter_lines():
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            yield json.loads(line[6:])


class ArenaClient:
    """Talks to one server's /v1/arena API (and /v1/chat/completions for Chat). `judge` is the session id sent with
    battles and votes (the server stores only its sha256). `api_key`, when the server requires API keys, is sent
    as a bearer token on every call except the export, which sends the admin token it is given instead.
    `ui_version` goes with every battle and vote: the leaderboard tells people's votes from simulated judges' by it."""

    def __init__(self, base_url: str, *, timeout_s: float = 600.0, api_key: str | None = None,
                 ui_version: str = UI_VERSION):
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout_s, connect=10.0)
        self.api_key = api_key
        self.ui_version = ui_version

    def _client(self, token: str | None) -> httpx.AsyncClient:
        """A client sending `token` (the API key, or the admin token for the export) as its bearer token."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # retries: a connection that could not be made (refused, timed out) is tried twice more; nothing was sent
        # yet, so this never repeats a battle or a vote (seen in CI: one ConnectTimeout under load ended a loop)
        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, headers=headers,
                                 transport=httpx.AsyncHTTPTransport(retries=2))

    async def _stream(self, path: str, body: dict, judge: str | None = None) -> AsyncIterator[dict]:
        # The judge header gives each browser session its own share of the engine (server/admission.py).
        headers = {"X-Palate-Judge": judge} if judge else None
        async with self._client(self.api_key) as client:
            async with client.stream("POST", path, json=body, headers=headers) as response:
                if response.status_code != 200:
                    raise _error(response, await response.aread())
                async for event in _sse(response):
                    yield event

    async def battle_events(self, prompt: str, *, system: str | None = None, judge: str | None = None,
                            **sampling: Any) -> AsyncIterator[dict]:
        """Start a battle and yield its stream events (dicts with a `type`: battle, delta, side_done, done)."""
        body = {"prompt": prompt, "system": system or None, "judge": judge, "ui_version": self.ui_version,
                **{k: v for k, v in sampling.items() if v is not None}}
        async for event in self._stream("/v1/arena/battles", body):
            yield event

    async def compare_events(self, models: list[str], prompt: str, *, judge: str | None = None,
                             **sampling: Any) -> AsyncIterator[dict]:
        """Named comparison (POST /v1/arena/compare): events compare, delta (index), model_done, done."""
        body = {"models": models, "prompt": prompt, **{k: v for k, v in sampling.items() if v is not None}}
        async for event in self._stream("/v1/arena/compare", body, judge):
            yield event

    async def chat_deltas(self, model: str, messages: list[dict], *, judge: str | None = None,
                          **sampling: Any) -> AsyncIterator[str]:
        """Stream one chat answer through the OpenAI API (/v1/chat/completions); yields text deltas."""
        body = {"model": model, "messages": messages, "stream": True,
                **{k: v for k, v in sampling.items() if v is not None}}
        async for chunk in self._stream("/v1/chat/completions", body, judge):
            if "error" in chunk:
                raise ArenaClientError(500, chunk["error"].get("message", "the stream failed"))
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict:
        async with self._client(self.api_key) as client:
            response = await client.request(method, path, **kwargs)
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    async def vote(self, battle_id: str, choice: str, judge: str | None = None, reasons: list[str] | None = None,
                   comment: str | None = None) -> dict:
        """Store the vote; returns the reveal (contestants by side, winner, flags)."""
        return await self._json("POST", f"/v1/arena/battles/{battle_id}/vote",
                                json={"choice": choice, "judge": judge, "ui_version": self.ui_version,
                                      "reasons": reasons or [], "comment": comment or None})

    async def edit(self, battle_id: str, text: str, judge: str | None = None) -> dict:
        return await self._json("POST", f"/v1/arena/battles/{battle_id}/edit", json={"text": text, "judge": judge})

    async def battle(self, battle_id: str) -> dict:
        return await self._json("GET", f"/v1/arena/battles/{battle_id}")

    async def leaderboard(self, source: str = "people") -> dict:
        return await self._json("GET", "/v1/arena/leaderboard", params={"source": source})

    async def export(self, admin_token: str | None = None, format: str = "dpo") -> dict:
        """The votes as training rows; the server needs the admin token unless its export_access is open."""
        async with self._client(admin_token) as client:
            response = await client.get("/v1/arena/export", params={"format": format})
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    async def info(self) -> dict:
        return await self._json("GET", "/v1/arena/info")

    async def queue(self) -> dict:
        return await self._json("GET", "/v1/arena/queue")

    async def training(self) -> dict:
        return await self._json("GET", "/v1/arena/training")

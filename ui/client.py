"""HTTP client of the arena API: what the Gradio UI (and scripts) use. The UI never touches the engine or the
database, so it runs inside the server process or on another machine (`palate arena --server URL`)."""

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


class ArenaClient:
    """Talks to one server's /v1/arena API. `judge` is the session id sent with battles and votes (the server
    stores only its sha256)."""

    def __init__(self, base_url: str, *, timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout_s, connect=10.0)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)

    async def battle_events(self, prompt: str, *, system: str | None = None, judge: str | None = None,
                            **sampling: Any) -> AsyncIterator[dict]:
        """Start a battle and yield its stream events (dicts with a `type`: battle, delta, side_done, done)."""
        body = {"prompt": prompt, "system": system or None, "judge": judge, "ui_version": UI_VERSION,
                **{k: v for k, v in sampling.items() if v is not None}}
        async with self._client() as client:
            async with client.stream("POST", "/v1/arena/battles", json=body) as response:
                if response.status_code != 200:
                    raise _error(response, await response.aread())
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[6:])

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict:
        async with self._client() as client:
            response = await client.request(method, path, **kwargs)
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    async def vote(self, battle_id: str, choice: str, judge: str | None = None) -> dict:
        """Store the vote; returns the reveal (contestants by side, winner, flags)."""
        return await self._json("POST", f"/v1/arena/battles/{battle_id}/vote",
                                json={"choice": choice, "judge": judge, "ui_version": UI_VERSION})

    async def battle(self, battle_id: str) -> dict:
        return await self._json("GET", f"/v1/arena/battles/{battle_id}")

    async def leaderboard(self) -> dict:
        return await self._json("GET", "/v1/arena/leaderboard")

    async def export(self) -> dict:
        return await self._json("GET", "/v1/arena/export")

    async def info(self) -> dict:
        return await self._json("GET", "/v1/arena/info")

"""What every arena tab shares: the HTTP client for this request, the judge id, the waiting ticker, plain words."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.arena_config import ArenaConfig
from core.arena_client import ArenaClient

NOTICE = ("Prompts, answers and votes are stored on this server and may become training data. "
          "Please don't type anything private.")
ENTER_HINT = "Enter sends · Shift+Enter starts a new line"
# For Send, Enter and Regenerate. Gradio's default trigger_mode "once" silently drops a press while the event
# before it is still pending, and an answer's event stays pending a moment after its last frame is shown (votes
# open, Send enabled): a quick follow-up typed then was lost. "always_last" runs it when that event has ended.
SEND_TRIGGER = {"trigger_mode": "always_last"}
FINISH_WORDS = {"stop": "finished", "length": "stopped at the length limit", "error": "failed"}
FLAG_WORDS = {"identity_leak": "named a model, so this vote is not counted in the ratings",
              "truncated": "was cut off at the length limit", "error": "failed", "empty": "was empty"}
REASON_WORDS = {"grounded": "sticks to the facts", "invented_facts": "invents facts", "hype": "hype",
                "repetitive": "repeats itself", "too_long": "too long", "too_short": "too short"}


def server_url_for(request: gr.Request | None, fallback: str = "http://127.0.0.1:8000") -> str:
    """The URL of the server this UI is mounted in: the socket the request arrived on (loopback for 0.0.0.0)."""
    raw = getattr(request, "request", None) if request is not None else None
    server = raw.scope.get("server") if raw is not None else None
    if server and server[1]:
        host = server[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "", None) else "[::1]" if host == "::" else host
        return f"http://{host}:{server[1]}"
    return fallback


def ui_api_key() -> str | None:
    """The API key the UI sends when the server requires keys: PALATE_ARENA_API_KEY, else the first of
    PALATE_API_KEYS (comma-separated). None when neither is set."""
    explicit = os.environ.get("PALATE_ARENA_API_KEY")
    if explicit:
        return explicit.strip()
    keys = [k.strip() for k in os.environ.get("PALATE_API_KEYS", "").split(",") if k.strip()]
    return keys[0] if keys else None


def plain_messages(value: list | None) -> list[dict]:
    """A Chatbot's value as OpenAI-style {role, content: str} messages: Gradio 6 hands a Chatbot's messages back
    to event handlers with `content` as a list of parts ({"type": "text", "text": ...})."""
    messages = []
    for message in value or []:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        messages.append({"role": message.get("role", "user"), "content": content or ""})
    return messages


@dataclass
class UiContext:
    server_url: str | None  # None: the server the UI is mounted in
    config: ArenaConfig
    api_key: str | None = None

    def client(self, request: gr.Request | None) -> ArenaClient:
        return ArenaClient(self.server_url or server_url_for(request), api_key=self.api_key or ui_api_key())

    @staticmethod
    def judge(request: gr.Request | None) -> str | None:
        return getattr(request, "session_hash", None) if request is not None else None


async def ticking(events: AsyncIterator[Any], interval_s: float = 1.0) -> AsyncIterator[Any]:
    """Yield each item of `events`, and None every `interval_s` while none arrives (so a waiting message can
    count seconds). Cancelling the consumer (Stop) cancels the reader, which closes the HTTP stream: the server
    then aborts the generations in the engine."""
    queue: asyncio.Queue = asyncio.Queue()
    finished = object()

    async def read() -> None:
        try:
            async for item in events:
                await queue.put(item)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which says what went wrong
            await queue.put(exc)
        await queue.put(finished)

    reader = asyncio.create_task(read())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), interval_s)
            except asyncio.TimeoutError:
                yield None
                continue
            if item is finished:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def waiting_words(client: ArenaClient, elapsed_s: float, started_text: bool) -> str:
    """'Waiting for the first words… 4 s · 12 requests in the engine, yours included (it runs 32 at once)'."""
    if started_text:
        return f"Writing… {elapsed_s:.0f} s"
    busy = ""
    try:
        queue = await client.queue()
        running, capacity = queue["engine_requests"], queue["engine_capacity"]
        if running > capacity:
            busy = f" · about {running - capacity} requests ahead of yours in the engine's queue"
        elif running:
            busy = f" · {running} requests in the engine, yours included (it runs {capacity} at once)"
    except Exception:  # noqa: BLE001 - the count is a courtesy; the wait goes on without it
        pass
    return f"Waiting for the first words… {elapsed_s:.0f} s{busy}"


CSS = """
.palate-notice {font-size: 0.85em; opacity: 0.85;}
.palate-hint {font-size: 0.8em; opacity: 0.75; margin-top: -6px;}
#vote-row button:disabled, .palate-votes button:disabled {opacity: 0.35; cursor: not-allowed; filter: grayscale(1);}
#vote-row button:not(:disabled) {border: 2px solid var(--color-accent); font-weight: 600;}
.palate-pane {min-width: 280px;}
/* Phone width: both answers, the vote buttons and the prompt fit one screen (answers scroll inside their panes). */
@media (max-width: 600px) {
  .palate-pane {height: auto !important; min-width: 0;}
  .palate-pane .bubble-wrap {height: 150px !important; max-height: 150px !important;}
  #vote-row {flex-wrap: nowrap !important; gap: 4px;}
  #vote-row button {min-width: 0 !important; flex: 1 1 0; padding: 6px 2px; font-size: 0.85em;}
  .palate-header h1 {font-size: 1.2em; margin: 0;}
  .palate-header p {display: none;}
}
"""

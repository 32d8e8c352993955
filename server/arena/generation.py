"""One arena generation (a battle side, a compare column): run it, time it, count it. Shared by battle and compare.

`generate_one` streams a rendered prompt through the engine for one served model and reports each text delta to
`on_text`; it never raises for an engine failure (a failing side must not take the battle down): the result says
`finish_reason="error"` with the reason for the server log. Cancelling it (Stop, or the client hanging up) cancels
the engine request, which the engine aborts. Metrics are counted under model "arena", never the contestant: a person
watching /metrics during a blind battle must not learn who is answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.engines.base import Engine, Sampling

log = logging.getLogger("palate.arena")
METRICS_MODEL = "arena"


@dataclass
class Generation:
    """What one generation produced."""

    text: str = ""
    finish_reason: str | None = None  # stop | length | error
    error: str | None = None
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    parts: list[str] = field(default_factory=list)


async def generate_one(engine: Engine, models: Any, served_id: str, prompt_text: str, sampling: Sampling,
                       request_id: str, on_text: Callable[[str], Awaitable[None]], metrics: Any = None,
                       endpoint: str = "arena") -> Generation:
    """Generate for `served_id` (held for the request, so hot-swap drains on it); see the module docstring."""
    started = time.perf_counter()
    result = Generation()
    status = "ok"
    try:
        async with models.use(served_id) as held:
            async for delta in engine.generate(prompt_text, sampling, held.handle, request_id):
                if delta.text:
                    if result.ttft_ms is None:
                        result.ttft_ms = (time.perf_counter() - started) * 1000.0
                    result.parts.append(delta.text)
                    await on_text(delta.text)
                result.completion_tokens += len(delta.token_ids)
                result.prompt_tokens = delta.prompt_tokens
                result.finish_reason = delta.finish_reason or result.finish_reason
        if result.finish_reason in (None, "abort"):
            result.error = f"generation ended without finishing ({result.finish_reason or 'no finish reason'})"
            result.finish_reason = "error"
    except asyncio.CancelledError:
        status = "aborted"
        raise
    except Exception as exc:  # noqa: BLE001 - reported in the result, logged by the caller
        result.finish_reason = "error"
        result.error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    finally:
        result.text = "".join(result.parts)
        result.duration_ms = (time.perf_counter() - started) * 1000.0
        if result.finish_reason == "error" and status == "ok":
            status = "error"
        if metrics is not None:
            metrics.request_done(METRICS_MODEL, endpoint, status, result.prompt_tokens or 0,
                                 result.completion_tokens, result.duration_ms / 1000.0,
                                 None if result.ttft_ms is None else result.ttft_ms / 1000.0)
    return result

"""Compare mode: 2-3 *named* served models answer the same conversation with the same sampling settings and seed;
their tokens stream side by side. Each pane takes one engine slot of its client's share (admission.py): the first
before the stream opens, the others as they get a turn, so panes beyond the share start when an earlier one ends
(the seed keeps each answer the same either way). Nothing is stored and there is no vote (a named comparison is not a
blind judgment).

Server-Sent Events, one JSON object per `data:` line:

    {"type": "compare", "models": ["base", "sft", "dpo"], "served": ["base", "sft@1", "dpo@2"], "seed": 123,
     "max_tokens": 192, "temperature": 0.7, "top_p": 0.95}
    {"type": "delta", "index": 0, "text": "..."}
    {"type": "model_done", "index": 0, "finish_reason": "stop"|"length"|"error", "completion_tokens": 17,
     "message": "...", "retry_after_s": 5}           # message only for "error"; retry_after_s when the pane got no
                                                     # turn (the client's queue or the wait limit: see admission.py)
    {"type": "done"}
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from server.admission import Rejected
from server.arena.generation import generate_one
from server.arena.protocol import CompareRequest
from server.engines.base import Sampling
from server.errors import APIError

log = logging.getLogger("palate.arena")
ROLES = ("system", "user", "assistant")


def compare_messages(request: CompareRequest) -> list[dict]:
    """The conversation every model answers; a 400 naming the field when it is malformed."""
    if (request.messages is None) == (request.prompt is None):
        raise APIError(400, "Give either messages or prompt (not both, not neither).", param="messages",
                       code="invalid_request")
    if request.prompt is not None:
        return ([{"role": "system", "content": request.system}] if request.system else []) + \
            [{"role": "user", "content": request.prompt}]
    messages = []
    for i, message in enumerate(request.messages):
        if set(message) - {"role", "content"} or message.get("role") not in ROLES or "content" not in message:
            raise APIError(400, f"messages[{i}] must be {{role, content}} with role one of {', '.join(ROLES)}.",
                           param=f"messages[{i}]", code="invalid_message")
        messages.append({"role": message["role"], "content": message["content"]})
    if not messages or messages[-1]["role"] != "user":
        raise APIError(400, "The last message must be the user's.", param="messages", code="invalid_message")
    if request.system:
        messages = [{"role": "system", "content": request.system}, *messages]
    return messages


async def start_compare(service: Any, request: CompareRequest,
                        pane_slot: Callable[..., AbstractAsyncContextManager] | None = None) -> AsyncIterator[str]:
    """Validate the request and return the SSE stream (errors before any byte is sent are API errors).
    `pane_slot(model=...)` holds an engine slot for each pane after the first (the first was taken on admission)."""
    config = service.config
    if len(request.models) > config.compare_max_models:
        raise APIError(400, f"Compare takes at most {config.compare_max_models} models, got {len(request.models)}.",
                       param="models", code="too_many_models")
    if len(set(request.models)) != len(request.models):
        raise APIError(400, "Name each model once.", param="models", code="duplicate_models")
    served = [service.models.resolve(name) for name in request.models]  # 404 naming the unknown model
    messages = compare_messages(request)
    if sum(len(m["content"]) for m in messages) > config.max_prompt_chars * 4:
        raise APIError(400, "The conversation is too long; start a new one.", param="messages", code="prompt_too_long")
    prompt_text = service.render(messages)
    prompt_tokens = len(service.engine.tokenizer().encode(prompt_text, add_special_tokens=False))
    room = service.engine.max_model_len - prompt_tokens
    if room < 1:
        raise APIError(400, f"The conversation takes {prompt_tokens} tokens, the whole context "
                            f"({service.engine.max_model_len}); shorten it.", param="messages", code="prompt_too_long")
    sampling = Sampling(
        max_tokens=min(request.max_tokens or config.default_max_tokens, service.server_config.max_tokens_cap, room),
        temperature=config.temperature if request.temperature is None else request.temperature,
        top_p=config.top_p if request.top_p is None else request.top_p,
        seed=request.seed if request.seed is not None else service.rng.randrange(2**31))
    return _stream(service, request.models, served, prompt_text, sampling, pane_slot or _no_slot)


@asynccontextmanager
async def _no_slot(**_: Any) -> AsyncIterator[None]:
    yield


async def _stream(service: Any, names: list[str], served: list[Any], prompt_text: str, sampling: Sampling,
                  pane_slot: Callable[..., AbstractAsyncContextManager]) -> AsyncIterator[str]:
    from server.serving import sse

    compare_id = uuid.uuid4().hex[:12]
    queue: asyncio.Queue[dict] = asyncio.Queue()

    async def run(index: int, model: Any) -> None:
        async def on_text(text: str) -> None:
            await queue.put({"type": "delta", "index": index, "text": text})

        try:
            async with pane_slot(model=model.id) if index else _no_slot():
                result = await generate_one(service.engine, service.models, model.id, prompt_text, sampling,
                                            f"compare-{compare_id}-{index}", on_text, service.metrics,
                                            endpoint="compare")
        except Rejected as rejection:  # no turn for this pane; the others go on
            await queue.put({"type": "model_done", "index": index, "finish_reason": "error", "completion_tokens": 0,
                             "message": rejection.message, "retry_after_s": rejection.retry_after_s})
            return
        event = {"type": "model_done", "index": index, "finish_reason": result.finish_reason,
                 "completion_tokens": result.completion_tokens}
        if result.error:
            log.warning("compare %s: %s failed: %s", compare_id, model.id, result.error)
            event["message"] = f"{model.id} failed: {result.error}"
        await queue.put(event)

    # Every pane that has a slot is submitted before the first await on the queue, so the engine batches them.
    tasks = [asyncio.create_task(run(i, model)) for i, model in enumerate(served)]
    try:
        yield sse({"type": "compare", "models": names, "served": [m.id for m in served], "seed": sampling.seed,
                   "max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p})
        remaining = len(tasks)
        while remaining:
            event = await queue.get()
            remaining -= event["type"] == "model_done"
            yield sse(event)
        yield sse({"type": "done"})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

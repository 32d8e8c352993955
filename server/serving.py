"""The serving layer: turns OpenAI requests into engine calls and engine deltas into OpenAI responses.

It receives the engine and the model manager, so tests can hand it any engine. Routers stay thin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from core.config import ServerConfig
from server.engines.base import Delta, Engine, EngineError, EngineRequestError, Sampling
from server.errors import APIError, engine_dead, error_body
from server.metrics import Metrics
from server.models import ModelManager, ServedModel
from server.protocol import ChatCompletionRequest, CompletionRequest, Usage, new_id, now

log = logging.getLogger("palate.serving")


def render_chat(tokenizer: Any, messages: list[dict]) -> str:
    """Render messages with the base model's chat template, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list = field(default_factory=list)


class Serving:
    def __init__(self, engine: Engine, models: ModelManager, config: ServerConfig, metrics: Metrics):
        self.engine = engine
        self.models = models
        self.config = config
        self.metrics = metrics

    # ---- validation -----------------------------------------------------------------------------------------------
    def _max_tokens(self, requested: int | None, prompt_tokens: int) -> int:
        limit = self.engine.max_model_len
        if prompt_tokens >= limit:
            raise APIError(400, f"The prompt is {prompt_tokens} tokens, which does not fit the model's context of "
                                f"{limit} tokens. Shorten the prompt.", param="messages", code="context_length_exceeded")
        if requested is not None and requested > self.config.max_tokens_cap:
            raise APIError(400, f"max_tokens={requested} is above this server's cap of {self.config.max_tokens_cap}. "
                                "Ask for fewer tokens.", param="max_tokens", code="max_tokens_too_large")
        room = limit - prompt_tokens
        if requested is not None and requested > room:
            raise APIError(400, f"The prompt ({prompt_tokens} tokens) plus max_tokens={requested} exceeds the "
                                f"model's context of {limit} tokens; ask for at most {room} tokens.",
                           param="max_tokens", code="context_length_exceeded")
        return requested if requested is not None else min(self.config.default_max_tokens, room)

    @staticmethod
    def _stop(stop: str | list[str] | None) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    def prepare_chat(self, req: ChatCompletionRequest) -> tuple[list[int], Sampling]:
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true.", param="top_logprobs")
        tokenizer = self.engine.tokenizer()
        prompt = render_chat(tokenizer, [m.model_dump() for m in req.messages])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        sampling = Sampling(
            max_tokens=self._max_tokens(req.max_completion_tokens or req.max_tokens, len(prompt_ids)),
            temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=self._stop(req.stop), n=req.n,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        )
        return prompt_ids, sampling

    def prepare_completion(self, req: CompletionRequest) -> tuple[list[int], Sampling]:
        if req.echo:
            raise APIError(400, "echo is not supported by this server.", param="echo")
        if isinstance(req.prompt, list) and req.prompt and isinstance(req.prompt[0], str):
            if len(req.prompt) != 1:
                raise APIError(400, "Send one prompt per request (batched prompts are not supported).", param="prompt")
            text: str | None = req.prompt[0]
        else:
            text = req.prompt if isinstance(req.prompt, str) else None
        tokenizer = self.engine.tokenizer()
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text is not None else list(req.prompt)
        if not prompt_ids:
            raise APIError(400, "The prompt is empty.", param="prompt")
        sampling = Sampling(
            max_tokens=self._max_tokens(req.max_tokens, len(prompt_ids)), temperature=req.temperature,
            top_p=req.top_p, seed=req.seed, stop=self._stop(req.stop), n=req.n, logprobs=req.logprobs,
        )
        return prompt_ids, sampling

    # ---- execution ------------------------------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        self.models.resolve(req.model)  # 404 before any work
        prompt_ids, sampling = self.prepare_chat(req)
        return await self._respond("chat", req.model, req.stream, req.stream_options, prompt_ids, sampling)

    async def completion(self, req: CompletionRequest) -> JSONResponse | StreamingResponse:
        self.models.resolve(req.model)
        prompt_ids, sampling = self.prepare_completion(req)
        return await self._respond("completion", req.model, req.stream, req.stream_options, prompt_ids, sampling)

    async def _respond(self, kind: str, model: str, stream: bool, stream_options: Any, prompt_ids: list[int],
                       sampling: Sampling) -> JSONResponse | StreamingResponse:
        if stream:
            include_usage = bool(stream_options and stream_options.include_usage)
            return StreamingResponse(self._stream(kind, model, prompt_ids, sampling, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return JSONResponse(await self._complete(kind, model, prompt_ids, sampling))

    async def _run(self, kind: str, model: str, prompt_ids: list[int], sampling: Sampling,
                   on_delta) -> tuple[ServedModel, dict[int, _Choice], int]:
        """Run one request on the engine, calling `on_delta(served, delta)` as output arrives; record metrics."""
        started = time.perf_counter()
        ttft = None
        status = "ok"
        choices: dict[int, _Choice] = {i: _Choice() for i in range(sampling.n)}
        async with self.models.use(model) as served:
            try:
                async for delta in self.engine.generate(prompt_ids, sampling, served.handle, new_id("req")):
                    if ttft is None and delta.token_ids:
                        ttft = time.perf_counter() - started
                    choice = choices[delta.index]
                    choice.text.append(delta.text)
                    choice.tokens += len(delta.token_ids)
                    choice.finish_reason = delta.finish_reason or choice.finish_reason
                    if delta.logprobs:
                        choice.logprobs.extend(delta.logprobs)
                    await on_delta(served, delta)
            except (asyncio.CancelledError, GeneratorExit):
                status = "aborted"  # the client went away; leaving this block aborts the request in the engine
                raise
            except BaseException:
                status = "error"
                raise
            finally:
                completion_tokens = sum(c.tokens for c in choices.values())
                self.metrics.request_done(served.id, kind, status, len(prompt_ids), completion_tokens,
                                          time.perf_counter() - started, ttft)
        return served, choices, len(prompt_ids)

    def _engine_failure(self, exc: Exception) -> APIError:
        """What the client is told when generation fails inside the engine: 503 once the engine is gone for good
        (restart needed), otherwise 500 with the engine's message."""
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, EngineRequestError):
            return APIError(400, f"The engine rejected the request: {exc}")
        if dead := self.engine.dead():
            return engine_dead(dead)
        if not isinstance(exc, EngineError):
            log.error("generation failed", exc_info=exc)
            return APIError(500, f"Internal error in the engine ({type(exc).__name__}: {exc}).")
        return APIError(500, f"The engine failed: {exc}")

    @staticmethod
    def _logprobs_payload(kind: str, logprobs: list) -> dict | None:
        if not logprobs:
            return None
        if kind == "chat":
            return {"content": [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                                 "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                                  for t, v in lp.top]} for lp in logprobs]}
        return {"tokens": [lp.token for lp in logprobs], "token_logprobs": [lp.logprob for lp in logprobs],
                "top_logprobs": [dict(lp.top) for lp in logprobs], "text_offset": []}

    async def _complete(self, kind: str, model: str, prompt_ids: list[int], sampling: Sampling) -> dict:
        async def ignore(*_):
            return None

        try:
            served, choices, prompt_tokens = await self._run(kind, model, prompt_ids, sampling, ignore)
        except Exception as exc:
            raise self._engine_failure(exc) from None
        completion_tokens = sum(c.tokens for c in choices.values())
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      total_tokens=prompt_tokens + completion_tokens).model_dump()
        if kind == "chat":
            data = [{"index": i, "message": {"role": "assistant", "content": "".join(c.text)},
                     "logprobs": self._logprobs_payload(kind, c.logprobs), "finish_reason": c.finish_reason}
                    for i, c in sorted(choices.items())]
            return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": served.id,
                    "choices": data, "usage": usage}
        data = [{"index": i, "text": "".join(c.text), "logprobs": self._logprobs_payload(kind, c.logprobs),
                 "finish_reason": c.finish_reason} for i, c in sorted(choices.items())]
        return {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": served.id,
                "choices": data, "usage": usage}

    async def _stream(self, kind: str, model: str, prompt_ids: list[int], sampling: Sampling,
                      include_usage: bool) -> AsyncIterator[str]:
        """SSE stream. If the client disconnects, Starlette cancels this generator and the engine aborts."""
        queue: asyncio.Queue = asyncio.Queue()
        request_id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        created = now()
        started_roles: set[int] = set()

        async def on_delta(served: ServedModel, delta: Delta) -> None:
            await queue.put(self._chunk(kind, request_id, created, served.id, delta, started_roles))

        async def produce() -> None:
            try:
                served, choices, prompt_tokens = await self._run(kind, model, prompt_ids, sampling, on_delta)
                if include_usage:
                    completion_tokens = sum(c.tokens for c in choices.values())
                    await queue.put({"id": request_id, "object": "chat.completion.chunk" if kind == "chat"
                                     else "text_completion", "created": created, "model": served.id, "choices": [],
                                     "usage": Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                                    total_tokens=prompt_tokens + completion_tokens).model_dump()})
            except Exception as exc:  # never end a broken stream as if it had finished
                error = self._engine_failure(exc)
                await queue.put(error_body(error.status, error.message, param=error.param, code=error.code))
            finally:
                await queue.put(None)

        task = asyncio.create_task(produce())
        try:
            while (item := await queue.get()) is not None:
                yield sse(item)
            yield sse("[DONE]")
        finally:
            if not task.done():
                task.cancel()  # client went away: cancelling the run aborts the request in the engine
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    def _chunk(self, kind: str, request_id: str, created: int, model_id: str, delta: Delta,
               started_roles: set[int]) -> dict:
        logprobs = self._logprobs_payload(kind, delta.logprobs or [])
        if kind == "chat":
            content: dict[str, Any] = {"content": delta.text}
            if delta.index not in started_roles:
                started_roles.add(delta.index)
                content = {"role": "assistant", **content}
            choice = {"index": delta.index, "delta": content, "logprobs": logprobs,
                      "finish_reason": delta.finish_reason}
            return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                    "choices": [choice]}
        return {"id": request_id, "object": "text_completion", "created": created, "model": model_id,
                "choices": [{"index": delta.index, "text": delta.text, "logprobs": logprobs,
                             "finish_reason": delta.finish_reason}]}

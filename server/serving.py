"""The serving layer: turns OpenAI requests into engine calls and engine deltas into OpenAI responses.

It receives the engine and the model manager, so tests can hand it any engine. Routers stay thin. Chat and text
completions run the same way here; their response bodies are `server.responses`' (one format class per endpoint).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from core.config import ServerConfig
from server.engines.base import Delta, Engine, EngineError, EngineRequestError, NonFiniteOutput, Sampling
from server.errors import APIError, engine_dead, error_body, printable
from server.metrics import Metrics
from server.models import ModelManager, ServedModel
from server.openai_format import echoed_entries
from server.protocol import ChatCompletionRequest, CompletionRequest, new_id, now
from server.request_checks import FieldCheck
from server.responses import ChatFormat, CompletionFormat, Echo, Generated, usage

log = logging.getLogger("palate.serving")


def render_chat(tokenizer: Any, messages: list[dict]) -> str:
    """Render messages with the base model's chat template, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sse(payload: dict | str) -> str:
    """One server-sent event; a string (the closing "[DONE]") goes as is. JSON with ASCII escapes: a stray surrogate
    in generated text can never fail the UTF-8 encoding of the stream."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


@dataclass
class Prepared:
    """A validated request, ready for the engine: what `prepare_chat` / `prepare_completion` return."""

    format: ChatFormat | CompletionFormat  # how its responses look (server.responses)
    model: str
    prompt_ids: list[int]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    echo_text: str | None = None  # completions with echo: the prompt text put before each choice's text
    echo_logprobs: int | None = None  # ... and with logprobs: the prompt tokens' entries come first
    prompt_logprobs: bool = False  # completions: choices carry vLLM's `prompt_logprobs`
    ignored: list[str] = field(default_factory=list)  # unknown fields ignored (server.unknown_fields: ignore)

    @property
    def kind(self) -> str:
        return self.format.kind  # "chat" | "completion"


class _EngineStream(StreamingResponse):
    """An SSE response whose producer task is cancelled when the ASGI call ends, however it ends: a body iterator
    that never started (client gone before the first byte) runs no `finally` of its own."""

    def __init__(self, content: AsyncIterator[str], task: asyncio.Task):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._task = task

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._task.done():
                self._task.cancel()  # aborts the request in the engine


class Serving:
    def __init__(self, engine: Engine, models: ModelManager, config: ServerConfig, metrics: Metrics):
        self.engine = engine
        self.models = models
        self.config = config
        self.metrics = metrics

    # ---- validation -----------------------------------------------------------------------------------------------
    def _max_tokens(self, requested: int | None, prompt_tokens: int, param: str = "max_tokens") -> int:
        limit = self.engine.max_model_len
        if prompt_tokens >= limit:
            raise APIError(400, f"The prompt is {prompt_tokens} tokens, which does not fit the model's context of "
                                f"{limit} tokens. Shorten the prompt.", param="messages", code="context_length_exceeded")
        if requested is not None and requested > self.config.max_tokens_cap:
            raise APIError(400, f"{param}={requested} is above this server's cap of {self.config.max_tokens_cap}. "
                                "Ask for fewer tokens.", param=param, code="max_tokens_too_large")
        room = limit - prompt_tokens
        if requested is not None and requested > room:
            raise APIError(400, f"The prompt ({prompt_tokens} tokens) plus {param}={requested} exceeds the "
                                f"model's context of {limit} tokens; ask for at most {room} tokens.",
                           param=param, code="context_length_exceeded")
        return requested if requested is not None else min(self.config.default_max_tokens, room)

    @staticmethod
    def _stop(stop: str | list[str] | None) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    @staticmethod
    def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
        """Token ids as ints, biases clamped to [-100, 100] (vLLM's `SamplingParams.from_optional`)."""
        if bias is None:
            return None
        converted = {}
        for key, value in bias.items():
            try:
                token_id = int(key)
            except ValueError:
                raise APIError(400, f"logit_bias keys are token ids; '{printable(key)}' is not an integer.",
                               param="logit_bias") from None
            if not math.isfinite(value):
                raise APIError(400, f"logit_bias[{token_id}] must be a finite number.", param="logit_bias")
            converted[token_id] = min(100.0, max(-100.0, value))
        return converted

    def _sampling(self, req: ChatCompletionRequest | CompletionRequest, max_tokens: int, logprobs: int | None,
                  max_param: str) -> Sampling:
        if req.min_tokens > max_tokens:
            raise APIError(400, f"min_tokens={req.min_tokens} is more than {max_param}={max_tokens}.",
                           param="min_tokens")
        json_object, json_schema = False, None
        if (fmt := req.response_format) is not None:
            if fmt.type == "json_object":
                json_object = True
            elif fmt.type == "json_schema":
                if fmt.json_schema is None or fmt.json_schema.schema_ is None:
                    raise APIError(400, "response_format of type 'json_schema' needs json_schema.schema (a JSON "
                                        "Schema object).", param="response_format.json_schema")
                json_schema = fmt.json_schema.schema_
            elif fmt.type != "text":
                raise APIError(400, f"response_format type '{printable(fmt.type)}' is not supported; use 'text', "
                                    "'json_object' or 'json_schema'.", param="response_format.type",
                               code="unsupported_field")
        return Sampling(
            max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
            stop=self._stop(req.stop), n=req.n, logprobs=logprobs,
            frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
            repetition_penalty=req.repetition_penalty, top_k=req.top_k, min_p=req.min_p, min_tokens=req.min_tokens,
            logit_bias=self._logit_bias(req.logit_bias), stop_token_ids=list(req.stop_token_ids or []),
            ignore_eos=req.ignore_eos, json_object=json_object, json_schema=json_schema,
        )

    def prepare_chat(self, req: ChatCompletionRequest) -> Prepared:
        check = FieldCheck(self.config.unknown_fields)
        check.request(req, "chat")
        messages = check.messages(req.messages)
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true.", param="top_logprobs")
        tokenizer = self.engine.tokenizer()
        prompt = render_chat(tokenizer, messages)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        max_param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = self._max_tokens(req.max_completion_tokens or req.max_tokens, len(prompt_ids), max_param)
        sampling = self._sampling(req, max_tokens, (req.top_logprobs or 0) if req.logprobs else None, max_param)
        return Prepared(ChatFormat(), req.model, prompt_ids, sampling, req.stream,
                        bool(req.stream_options and req.stream_options.include_usage), ignored=check.ignored)

    def prepare_completion(self, req: CompletionRequest) -> Prepared:
        check = FieldCheck(self.config.unknown_fields)
        check.request(req, "completion")
        if req.prompt_logprobs is not None and req.stream:
            raise APIError(400, "prompt_logprobs are not available with stream=true (as in vLLM).",
                           param="prompt_logprobs")
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
        sampling = self._sampling(req, self._max_tokens(req.max_tokens, len(prompt_ids)), req.logprobs, "max_tokens")
        echo_logprobs = req.logprobs if req.echo else None
        # As vLLM: echo with logprobs scores the prompt tokens too, with as many alternatives as asked for.
        sampling.prompt_logprobs = req.prompt_logprobs if req.prompt_logprobs is not None else echo_logprobs
        echo_text = None
        if req.echo:
            echo_text = text if text is not None else tokenizer.decode(prompt_ids)
        return Prepared(CompletionFormat(logprobs=req.logprobs is not None), req.model, prompt_ids, sampling, req.stream,
                        bool(req.stream_options and req.stream_options.include_usage), echo_text=echo_text,
                        echo_logprobs=echo_logprobs, prompt_logprobs=sampling.prompt_logprobs is not None,
                        ignored=check.ignored)

    # ---- execution ------------------------------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest) -> Response:
        self.models.resolve(req.model)  # 404 before any work
        return await self.respond(self.prepare_chat(req))

    async def completion(self, req: CompletionRequest) -> Response:
        self.models.resolve(req.model)
        return await self.respond(self.prepare_completion(req))

    async def respond(self, prepared: Prepared) -> Response:
        """Run a prepared request: a JSON body, or an SSE stream. A failure before the first output (the engine
        refusing a field, a grammar it cannot compile, a dead engine) is an HTTP error with its own status; a
        failure after it ends the stream with an error event."""
        if prepared.stream:
            response: Response = await self._open_stream(prepared)
        else:
            response = JSONResponse(await self._complete(prepared))
        if prepared.ignored:
            response.headers["x-palate-ignored-fields"] = printable(",".join(prepared.ignored), ascii_only=True)
        return response

    async def _run(self, prepared: Prepared, on_delta) -> tuple[ServedModel, dict[int, Generated], list | None]:
        """Run one request on the engine, calling `on_delta(served, delta)` as output arrives; record metrics.
        Returns the served model, the choices and the prompt log-probs (when asked for)."""
        kind, sampling, prompt_ids = prepared.kind, prepared.sampling, prepared.prompt_ids
        started = time.perf_counter()
        ttft = None
        status = "ok"
        prompt_logprobs = None
        choices: dict[int, Generated] = {i: Generated() for i in range(sampling.n)}
        async with self.models.use(prepared.model) as served:
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
                    if delta.prompt_logprobs is not None and prompt_logprobs is None:
                        prompt_logprobs = delta.prompt_logprobs
                    await on_delta(served, delta)
            except (asyncio.CancelledError, GeneratorExit):
                status = "aborted"  # the client went away; leaving this block aborts the request in the engine
                raise
            except NonFiniteOutput:
                status = "non_finite"
                raise
            except BaseException:
                status = "error"
                raise
            finally:
                completion_tokens = sum(c.tokens for c in choices.values())
                self.metrics.request_done(served.id, kind, status, len(prompt_ids), completion_tokens,
                                          time.perf_counter() - started, ttft)
        if sampling.prompt_logprobs is not None and prompt_logprobs is None:
            raise EngineError("the engine returned no prompt log-probs")
        return served, choices, prompt_logprobs

    def _engine_failure(self, exc: Exception) -> APIError:
        """What the client is told when generation fails inside the engine: 503 once the engine is gone for good
        (restart needed), 400 when it refused the request, otherwise 500 with the engine's message."""
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, EngineRequestError):
            return APIError(400, f"The engine rejected the request: {exc}")
        if isinstance(exc, NonFiniteOutput):
            log.error("%s", exc)
            return APIError(500, str(exc), code="non_finite_output")
        if dead := self.engine.dead():
            return engine_dead(dead)
        if not isinstance(exc, EngineError):
            log.error("generation failed", exc_info=exc)
            return APIError(500, f"Internal error in the engine ({type(exc).__name__}: {exc}).")
        return APIError(500, f"The engine failed: {exc}")

    def _echo(self, prepared: Prepared, prompt_logprobs: list | None) -> Echo:
        """What a text completion puts before its output (echo, its log-prob entries, prompt log-probs)."""
        entries = None
        if prepared.echo_logprobs is not None and prompt_logprobs is not None:
            entries = echoed_entries(prepared.prompt_ids, prompt_logprobs, prepared.echo_logprobs,
                                     self.engine.tokenizer().decode)
        return Echo(prepared.echo_text or "", entries, prompt_logprobs if prepared.prompt_logprobs else None)

    async def _complete(self, prepared: Prepared) -> dict:
        async def ignore(*_):
            return None

        try:
            served, choices, prompt_logprobs = await self._run(prepared, ignore)
        except Exception as exc:
            raise self._engine_failure(exc) from None
        use = usage(len(prepared.prompt_ids), sum(c.tokens for c in choices.values()))
        return prepared.format.response(served.id, choices, use, self._echo(prepared, prompt_logprobs)).model_dump()

    async def _open_stream(self, prepared: Prepared) -> Response:
        """Start the request and wait for its first event: an error before any output raises (an HTTP error);
        otherwise the SSE stream. If the client disconnects, the producer task is cancelled and the engine aborts."""
        fmt = prepared.format
        queue: asyncio.Queue = asyncio.Queue()
        request_id = new_id(fmt.id_prefix)
        created = now()
        started: set[int] = set()  # choices whose first chunk went out (it carries the role, or the echo)
        seen: dict[str, list] = {}  # the prompt log-probs come with the request's first delta; every choice echoes them

        async def on_delta(served: ServedModel, delta: Delta) -> None:
            if delta.prompt_logprobs is not None:
                seen.setdefault("prompt_logprobs", delta.prompt_logprobs)
            first = delta.index not in started
            started.add(delta.index)
            echo = self._echo(prepared, seen.get("prompt_logprobs")) if first else Echo()
            await queue.put(fmt.chunk(request_id, created, served.id, delta, first, echo).model_dump())

        async def produce() -> None:
            try:
                served, choices, _ = await self._run(prepared, on_delta)
                if prepared.include_usage:
                    use = usage(len(prepared.prompt_ids), sum(c.tokens for c in choices.values()))
                    await queue.put(fmt.usage_chunk(request_id, created, served.id, use).model_dump())
            except Exception as exc:  # never end a broken stream as if it had finished
                await queue.put(self._engine_failure(exc))
            finally:
                await queue.put(None)

        task = asyncio.create_task(produce())
        try:
            first = await queue.get()
        except BaseException:
            task.cancel()
            raise
        if isinstance(first, APIError):
            raise first

        async def events() -> AsyncIterator[str]:
            item = first
            while item is not None:
                if isinstance(item, APIError):
                    item = error_body(item.status, item.message, param=item.param, code=item.code)
                yield sse(item)
                item = await queue.get()
            yield sse("[DONE]")

        return _EngineStream(events(), task)

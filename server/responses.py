"""The two generation endpoints' response bodies, whole or as stream chunks: one class per endpoint.

`server.serving.Serving` runs the engine the same way for both; what differs - the object names, where the text goes
(a message or plain text), echo and prompt log-probs (text completions only) - lives here, built as the pydantic
models of `server.protocol`. The log-prob shapes are `server.openai_format`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.engines.base import Delta
from server.openai_format import EchoEntry, logprobs_payload, prompt_logprobs_payload
from server.protocol import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse,
                             ChatDelta, CompletionChoice, CompletionResponse, Usage, new_id, now)


@dataclass
class Generated:
    """One choice as the engine produced it: its text pieces, token count, finish reason and sampled log-probs."""

    text: list[str] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list = field(default_factory=list)


@dataclass
class Echo:
    """What a text completion puts before its output: the prompt's text (echo), the prompt tokens' log-prob entries
    (echo with logprobs) and vLLM's `prompt_logprobs` (when asked for). Chat has none of these."""

    text: str = ""
    entries: list[EchoEntry] | None = None
    prompt_logprobs: list | None = None


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


class ChatFormat:
    """`/v1/chat/completions`: `chat.completion`, streamed as `chat.completion.chunk` deltas."""

    kind = "chat"
    id_prefix = "chatcmpl"

    def response(self, model: str, choices: dict[int, Generated], use: Usage, echo: Echo) -> ChatCompletionResponse:
        return ChatCompletionResponse(id=new_id(self.id_prefix), created=now(), model=model, usage=use, choices=[
            ChatChoice(index=i, message=AssistantMessage(content="".join(c.text)),
                       logprobs=logprobs_payload("chat", c.logprobs), finish_reason=c.finish_reason)
            for i, c in sorted(choices.items())])

    def chunk(self, request_id: str, created: int, model: str, delta: Delta, first: bool,
              echo: Echo) -> ChatCompletionChunk:
        """One delta; a choice's first chunk carries the assistant role."""
        content = ChatDelta(role="assistant" if first else None, content=delta.text)
        return ChatCompletionChunk(id=request_id, created=created, model=model, choices=[
            ChatChunkChoice(index=delta.index, delta=content, logprobs=logprobs_payload("chat", delta.logprobs or []),
                            finish_reason=delta.finish_reason)])

    def usage_chunk(self, request_id: str, created: int, model: str, use: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=request_id, created=created, model=model, choices=[], usage=use)


class CompletionFormat:
    """`/v1/completions`: `text_completion`, streamed as `text_completion` chunks; `logprobs` only when asked."""

    kind = "completion"
    id_prefix = "cmpl"

    def __init__(self, logprobs: bool):
        self.logprobs = logprobs

    def _logprobs(self, sampled: list, echoed: list[EchoEntry] | None) -> dict | None:
        return logprobs_payload("completion", sampled, echoed) if self.logprobs else None

    def response(self, model: str, choices: dict[int, Generated], use: Usage, echo: Echo) -> CompletionResponse:
        return CompletionResponse(id=new_id(self.id_prefix), created=now(), model=model, usage=use, choices=[
            CompletionChoice(index=i, text=echo.text + "".join(c.text), logprobs=self._logprobs(c.logprobs, echo.entries),
                             finish_reason=c.finish_reason, prompt_logprobs=prompt_logprobs_payload(echo.prompt_logprobs))
            for i, c in sorted(choices.items())])

    def chunk(self, request_id: str, created: int, model: str, delta: Delta, first: bool,
              echo: Echo) -> CompletionResponse:
        """One delta; a choice's first chunk carries the echoed prompt (text and log-prob entries)."""
        text, entries = (echo.text + delta.text, echo.entries) if first else (delta.text, None)
        return CompletionResponse(id=request_id, created=created, model=model, choices=[
            CompletionChoice(index=delta.index, text=text, logprobs=self._logprobs(delta.logprobs or [], entries),
                             finish_reason=delta.finish_reason)])

    def usage_chunk(self, request_id: str, created: int, model: str, use: Usage) -> CompletionResponse:
        return CompletionResponse(id=request_id, created=created, model=model, choices=[], usage=use)

"""Request and response models of the OpenAI-compatible API.

Fields follow OpenAI's order; vLLM's sampling extensions that Palate implements come after them, and Palate's own
extensions are marked `# palate:`. A field either works or is refused: anything a client sends beyond the fields
declared here stays in `model_extra` and is sorted by `server/request_checks.py` (a 400 naming an unsupported or
unknown field; unknown ones may be ignored by config instead). Ranges are vLLM's `SamplingParams` ranges; a value
outside them is a 422 schema error naming the field.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class _Open(BaseModel):
    """A request object that keeps unknown keys (in `model_extra`) so they can be refused by name."""

    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    """One part of a message's content. Only 'text' parts are served; other types are refused by name."""

    type: str
    text: str | None = None


class ChatMessage(_Open):
    # 'tool' and 'function' parse, so that they are refused with a 400 that says why instead of a schema error.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # passed to the chat template with the turn


class StreamOptions(_Open):
    include_usage: bool = False


class JsonSchemaFormat(_Open):
    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None  # the grammar is always enforced, strict or not

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ResponseFormat(_Open):
    """'text' (no constraint), 'json_object' (any JSON object) or 'json_schema' (JSON matching the schema), through
    vLLM's structured outputs. Other types are refused."""

    type: str
    json_schema: JsonSchemaFormat | None = None


_INT64 = 2**63


class _SamplingRequest(_Open):
    """The fields chat and text completions share."""

    model: str
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias, clamped to [-100, 100] as vLLM does
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=8)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    seed: int | None = Field(None, ge=-_INT64, le=_INT64 - 1)  # what the engine's generator accepts
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: str | None = None  # accepted as OpenAI's end-user id; not used for anything
    # vLLM's sampling extensions (SamplingParams)
    top_k: int = Field(0, ge=-1, le=_INT64 - 1)  # 0 or -1: off
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    min_tokens: int = Field(0, ge=0, le=_INT64 - 1)
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)  # wins over max_tokens, as in OpenAI's API


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[int]
    echo: bool = False  # the prompt comes back before the completion (with its log-probs when logprobs is set)
    logprobs: int | None = Field(None, ge=0, le=20)
    prompt_logprobs: int | None = Field(None, ge=0, le=20)  # vLLM's: per prompt token, in choices[].prompt_logprobs


class TokenizeCompletionRequest(_Open):
    """vLLM's /tokenize with a prompt."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatRequest(_Open):
    """vLLM's /tokenize with messages, rendered with the chat template as a chat request would be."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True
    add_special_tokens: bool = False
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(_Open):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, whatever the status: OpenAI's shape."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


# ---- responses of /v1/chat/completions and /v1/completions (JSON bodies and stream chunks) -------------------------
class _Response(BaseModel):
    """A response object: every field is sent, None as null (as OpenAI's and vLLM's servers do), except the ones in
    `_omit_when_none`, which are sent only when set (a stream's usage, a chunk's role, vLLM's prompt_logprobs)."""

    _omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset_extras(self, handler):  # noqa: ANN001, ANN202 - pydantic's serializer protocol
        data = handler(self)
        for key in self._omit_when_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None  # {"content": [{token, logprob, bytes, top_logprobs}]}
    finish_reason: str | None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Response):
    _omit_when_none = ("role",)
    role: Literal["assistant"] | None = None  # only in each choice's first chunk
    content: str


class ChatChunkChoice(_Response):
    index: int
    delta: ChatDelta
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    _omit_when_none = ("usage",)
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # only in the last chunk, with stream_options.include_usage (choices empty)


class CompletionChoice(_Response):
    _omit_when_none = ("prompt_logprobs",)
    index: int
    text: str
    logprobs: dict[str, Any] | None = None  # {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    finish_reason: str | None = None
    prompt_logprobs: list[dict[str, Any] | None] | None = None  # vLLM's, only when asked for


class CompletionResponse(_Response):
    """A text completion, and (the same object, as OpenAI's) each chunk of a streamed one."""

    _omit_when_none = ("usage",)
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None  # streamed: only in the last chunk, with stream_options.include_usage


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "palate"
    root: str | None = None  # what the id resolves to (aliases point at name@version)
    parent: str | None = None  # the model this one was trained from: "base" or "name@version"
    palate: dict[str, Any] | None = None  # palate: kind, rank, target modules, dataset hash, metrics, lineage


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadAdapterRequest(BaseModel):
    ref: str | None = Field(None, description="name@version, or an alias/name resolved in the registry")
    path: str | None = Field(None, description="A version directory inside the adapter root (instead of ref)")
    alias: str | None = Field(None, description="Also point this alias at the loaded version")


class AliasRequest(BaseModel):
    alias: str
    target: str

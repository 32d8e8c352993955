"""Request and response models of the OpenAI-compatible API.

Palate's extensions are marked `# palate:`. Unknown request fields are ignored (as OpenAI's servers do), so any
OpenAI client works; fields we do not support are rejected with a 400 rather than silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    """The fields chat and text completions share. Unknown fields are allowed (and ignored), as OpenAI does."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=8)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what the engine's generator accepts
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: str | None = None


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[int]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


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

"""The engine interface: one small Protocol, three implementations (vllm in-process, remote vLLM server, hf reference).

The serving layer talks only to this interface, so tests can hand it any engine. Prompts arrive already rendered
with the base model's chat template (the serving layer owns templating); the engine only generates and scores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class EngineError(RuntimeError):
    """The engine refused a request or an adapter; the message is safe to show the client."""


class EngineRequestError(EngineError):
    """The engine refused the request itself (a token id outside the vocabulary, an empty stop string...): the
    client's mistake, answered with a 400, not an engine failure."""


@dataclass(frozen=True)
class AdapterHandle:
    """What an engine needs to serve one adapter version. A new version always gets a new `lora_id`:
    vLLM caches adapters by id, so reusing an id would serve stale weights."""

    ref: str  # "sft@1"
    lora_id: int
    path: Path


@dataclass
class Sampling:
    """Sampling settings shared by every engine (OpenAI names)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    logprobs: int | None = None  # None: off; k >= 0: chosen token's logprob plus the k most likely alternatives


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Delta:
    """New output of one choice since the previous delta. The last delta of a choice has `finish_reason` set
    ('stop', 'length' or 'abort')."""

    index: int
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None


@runtime_checkable
class Engine(Protocol):
    name: str
    max_model_len: int

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def dead(self) -> str | None:
        """Why the engine can no longer serve (it died and needs a restart), or None while it can."""

    def tokenizer(self) -> Any:
        """The base model's Hugging Face tokenizer (chat template, token counting)."""

    def generate(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None,
                 request_id: str) -> AsyncIterator[Delta]:
        """Stream deltas for every choice. Cancelling the iterator aborts the request in the engine."""

    async def score(self, prompt_ids: list[int], completion_ids: list[int],
                    adapter: AdapterHandle | None) -> list[float]:
        """Log-probability of each completion token given the prompt and the tokens before it (teacher forcing)."""

    async def load_adapter(self, adapter: AdapterHandle) -> None: ...

    async def unload_adapter(self, adapter: AdapterHandle) -> None: ...

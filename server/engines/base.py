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


class NonFiniteOutput(EngineError):
    """The model's logits held NaN or infinity while generating or scoring: its output is meaningless. The request
    fails alone (500 `non_finite_output`); preflight refuses adapters with non-finite or out-of-range weights, so this
    means finite weights that overflow at run time."""


def non_finite(model: str, where: str) -> NonFiniteOutput:
    """The one message every engine gives for non-finite logits."""
    return NonFiniteOutput(
        f"{model} produced non-finite logits (NaN or infinity) at {where}; its answer would be garbage, so this request "
        "failed. Other models are not affected. If it is an adapter, its weights overflow at run time: unload it "
        "(DELETE /admin/adapters/REF) and retrain it, e.g. with a lower learning rate.")


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
    """Sampling settings shared by every engine: OpenAI's names, then vLLM's `SamplingParams` extensions, with
    vLLM's meaning. An engine that cannot honour a field refuses the request with `EngineRequestError`, never
    ignores it."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    logprobs: int | None = None  # None: off; k >= 0: chosen token's logprob plus the k most likely alternatives
    frequency_penalty: float = 0.0  # minus penalty x (times the token occurred in the output)
    presence_penalty: float = 0.0  # minus penalty once the token occurred in the output
    repetition_penalty: float = 1.0  # divides positive / multiplies negative logits of prompt and output tokens
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0  # drop tokens below min_p x the most likely token's probability
    min_tokens: int = 0  # end-of-sequence and stop_token_ids are masked until this many tokens were generated
    logit_bias: dict[int, float] | None = None  # added to the logits before sampling
    stop_token_ids: list[int] = field(default_factory=list)  # generation stops after one of these (not shown)
    ignore_eos: bool = False  # keep generating past end-of-sequence, up to max_tokens
    prompt_logprobs: int | None = None  # per prompt token: its logprob and the k most likely tokens in its place
    json_object: bool = False  # output constrained to a JSON object
    json_schema: dict | None = None  # output constrained to JSON matching this schema

    def structured(self) -> bool:
        return self.json_object or self.json_schema is not None


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Candidate:
    """One token at one prompt position, as vLLM reports prompt log-probs: id, text, logprob and rank (1 = most
    likely)."""

    token_id: int
    token: str
    logprob: float
    rank: int


@dataclass
class Delta:
    """New output of one choice since the previous delta. The last delta of a choice has `finish_reason` set
    ('stop', 'length' or 'abort'). The first delta of a request carries `prompt_logprobs` when they were asked for:
    one entry per prompt token, None for the first, else the actual token followed by the k most likely ones."""

    index: int
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[list[Candidate] | None] | None = None


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

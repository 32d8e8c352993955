"""Test doubles for the arena: a deterministic engine and tokenizer, a tiny adapter registry, and the real app.

`FakeEngine` follows server.engines.base.Engine. Its answers depend on the adapter (so sides differ) but never
contain the adapter's name, unless the prompt asks for a trick:

    LEAK  the answer names its adapter ("I am the sft adapter")  -> flagged identity_leak
    LONG  the answer stops at max_tokens with finish_reason "length"
    FAIL  generation raises EngineError naming the adapter -> the client must only see "side X failed"
    SAME  both sides give the same answer (when the latest user message says SAME)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np

from core.config import PalateConfig
from core.registry import AdapterRegistry
from server.engines.base import AdapterHandle, Candidate, Delta, EngineError, Sampling
from server.preflight import BaseModelFacts

FAKE_BASE = BaseModelFacts(id="fake-base", weights_sha256="f" * 64, hidden_size=8, intermediate_size=16,
                           num_layers=2, q_out=8, kv_out=8)
_WORDS = ["Bright", "two-bed", "condo", "near", "transit", "with", "in-unit", "laundry", "and", "a", "quiet",
          "balcony", "facing", "south", "over", "the", "park", "modest", "fee", "included"]


class FakeTokenizer:
    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):  # noqa: ANN001
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self.encode(text)}

    def decode(self, ids, skip_special_tokens=True) -> str:  # noqa: ANN001
        return " ".join("w" for _ in ids)


class FakeEngine:
    """Deterministic per (adapter, prompt, seed); streams one word per delta with `delay_s` between words."""

    name = "fake"
    max_model_len = 4096

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.loaded: dict[int, AdapterHandle] = {}
        self.requests: list[tuple[str, str | None, Sampling]] = []
        self._tokenizer = FakeTokenizer()
        self.died: str | None = None  # set by a test: the engine is gone, generate() raises like vLLM's would

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def dead(self) -> str | None:
        return self.died

    def tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def _answer(self, prompt: str, adapter: AdapterHandle | None, seed: int | None) -> list[str]:
        who = adapter.ref.split("@")[0] if adapter else "base"
        if "SAME" in prompt.rsplit("<|user|>", 1)[-1]:  # this turn's message only: a follow-up may differ
            return ["The", "same", "answer."]
        if "LEAK" in prompt:
            return ["I", "am", "the", who if adapter else "base model", "here."]
        digest = hashlib.sha256(f"{who}|{prompt}|{seed}".encode()).digest()
        return [_WORDS[b % len(_WORDS)] for b in digest[: 6 + digest[0] % 6]] + ["."]

    async def generate(self, prompt, sampling: Sampling, adapter: AdapterHandle | None, request_id: str):  # noqa: ANN001
        self.requests.append((request_id, adapter.ref if adapter else None, sampling))
        if self.died:
            raise RuntimeError("EngineDeadError")
        scored = None
        if isinstance(prompt, list):  # token ids (the OpenAI routes send ids; the arena sends text)
            if sampling.prompt_logprobs is not None:  # as vLLM: the first token has none, the others one each
                scored = [None] + [[Candidate(t, str(t), -1.0, 1)] for t in prompt[1:]]
            prompt = " ".join(str(t) for t in prompt)
        if adapter is not None and adapter.lora_id not in self.loaded:
            raise EngineError(f"LoRA {adapter.ref} is not loaded")
        if "FAIL" in prompt and adapter is not None:
            await asyncio.sleep(self.delay_s)
            raise EngineError(f"adapter {adapter.ref} at {adapter.path} crashed")
        words = self._answer(prompt, adapter, sampling.seed)
        limit = sampling.max_tokens if "LONG" not in prompt else 3
        words = words + ["more"] * 50 if "LONG" in prompt else words
        prompt_tokens = len(prompt.split())
        for i, word in enumerate(words[:limit]):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            last = i == min(len(words), limit) - 1
            finish = None if not last else ("length" if i + 1 >= limit and len(words) > limit else "stop")
            yield Delta(index=0, text=(" " if i else "") + word, token_ids=[i], prompt_tokens=prompt_tokens,
                        finish_reason=finish, prompt_logprobs=scored if i == 0 else None)

    async def score(self, prompt_ids, completion_ids, adapter):  # noqa: ANN001
        return [-1.0 for _ in completion_ids]

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        self.loaded[adapter.lora_id] = adapter

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        self.loaded.pop(adapter.lora_id, None)


def write_tiny_adapter(directory: Path, seed: int = 0) -> Path:
    """A valid rank-2 LoRA on q_proj for FAKE_BASE (passes the server's preflight)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(FAKE_BASE.num_layers):
        prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((2, FAKE_BASE.hidden_size)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((FAKE_BASE.q_out, 2)).astype(np.float32)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}))
    return directory


def make_registry(root: Path, names: tuple[str, ...] = ("sft", "dpo")) -> AdapterRegistry:
    """A registry at `root` with one version per name and aliases pointing at them."""
    registry = AdapterRegistry(root)
    for i, name in enumerate(names):
        source = write_tiny_adapter(root.parent / f"src-{name}", seed=i)
        registry.add(name, source, {"kind": name if name in ("sft", "dpo") else "external",
                                    "base_model": {"id": FAKE_BASE.id, "weights_sha256": FAKE_BASE.weights_sha256}})
    return registry


def make_config(tmp: Path, database_url: str | None = None, mount_arena: bool = False,
                names: tuple[str, ...] = ("sft", "dpo"), admission: dict | None = None) -> PalateConfig:
    """Server config for a fake-engine app: registry and SQLite store under `tmp`; `admission` overrides the
    server's admission settings (e.g. {"enabled": False} for a store test whose many clients share one address)."""
    adapters = tmp / "adapters"
    if not adapters.exists():
        make_registry(adapters, names)
    return PalateConfig.model_validate({
        "model": {"id": FAKE_BASE.id},
        "server": {"adapter_root": str(adapters), "database_url": database_url or f"sqlite:///{tmp / 'votes.db'}",
                   "mount_arena": mount_arena, "max_tokens_cap": 512, **({"admission": admission} if admission else {})},
    })


def make_app(config: PalateConfig, engine: FakeEngine | None = None):
    """The real FastAPI app (server.app.create_app) around a FakeEngine."""
    from server.app import create_app

    return create_app(config, engine or FakeEngine(), base_facts=FAKE_BASE)

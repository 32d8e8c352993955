"""The reference engine: transformers + PEFT, several adapters on one base model, one request at a time.

It is slow on purpose-simple: plain forward passes with a KV cache, greedy or temperature/top-p sampling. Its job is
to be obviously right, so that `vllm` can be checked against it token for token on the same adapter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.engines.base import AdapterHandle, Delta, EngineError, Sampling, TokenLogprob


class HfEngine:
    name = "hf"

    def __init__(self, model_dir: Path, max_model_len: int = 2048, dtype: str = "bfloat16"):
        self.model_dir = Path(model_dir)
        self.max_model_len = max_model_len
        self.dtype = dtype
        self._model: Any = None  # the base model, later wrapped in a PeftModel
        self._tokenizer: Any = None
        self._adapters: dict[int, str] = {}
        self._lock = threading.Lock()  # PEFT's active adapter is global state: one forward pass at a time

    async def start(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self._model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=getattr(torch, self.dtype))
        self._model.eval()

    async def shutdown(self) -> None:
        self._model = None

    def dead(self) -> str | None:
        return None

    def tokenizer(self) -> Any:
        return self._tokenizer

    def token_text(self, token_id: int) -> str:
        """A token as text, the way OpenAI's API and vLLM show it (' con', not the BPE symbol 'Ġcon')."""
        return self._tokenizer.decode([token_id])

    # ---- adapters -------------------------------------------------------------------------------------------------
    async def load_adapter(self, adapter: AdapterHandle) -> None:
        await asyncio.to_thread(self._load_adapter, adapter)

    def _load_adapter(self, adapter: AdapterHandle) -> None:
        from peft import PeftModel

        name = f"lora{adapter.lora_id}"
        with self._lock:
            try:
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(str(adapter.path), adapter_name=name)
                else:
                    self._model = PeftModel.from_pretrained(self._model, str(adapter.path), adapter_name=name)
                self._model.eval()
            except Exception as exc:
                raise EngineError(f"PEFT could not load {adapter.ref}: {exc}") from exc
            self._adapters[adapter.lora_id] = name

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        with self._lock:
            name = self._adapters.pop(adapter.lora_id, None)
            if name:
                self._model.delete_adapter(name)

    def _activate(self, adapter: AdapterHandle | None):
        """Context manager selecting the adapter (or none) for the next forward passes; call with the lock held."""
        import contextlib

        from peft import PeftModel

        if adapter is None:
            return self._model.disable_adapter() if isinstance(self._model, PeftModel) else contextlib.nullcontext()
        name = self._adapters.get(adapter.lora_id)
        if name is None:
            raise EngineError(f"{adapter.ref} is not loaded in the hf engine.")
        self._model.set_adapter(name)
        return contextlib.nullcontext()

    # ---- scoring --------------------------------------------------------------------------------------------------
    async def score(self, prompt_ids: list[int], completion_ids: list[int],
                    adapter: AdapterHandle | None) -> list[float]:
        return await asyncio.to_thread(self._score, list(prompt_ids), list(completion_ids), adapter)

    def _score(self, prompt_ids: list[int], completion_ids: list[int], adapter: AdapterHandle | None) -> list[float]:
        import torch

        ids = torch.tensor([prompt_ids + completion_ids])
        with self._lock, self._activate(adapter), torch.no_grad():
            logits = self._model(input_ids=ids).logits.float()
        logps = torch.log_softmax(logits[0, :-1], dim=-1)
        targets = ids[0, 1:]
        token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return token_logps[len(prompt_ids) - 1:].tolist()

    # ---- generation -----------------------------------------------------------------------------------------------
    async def generate(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None,
                       request_id: str) -> AsyncIterator[Delta]:
        prompt_ids = prompt if isinstance(prompt, list) else self._tokenizer(prompt, add_special_tokens=False)["input_ids"]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                for index in range(sampling.n):
                    self._generate_one(list(prompt_ids), sampling, adapter, index, emit, cancelled)
            except Exception as exc:  # surfaced to the caller as an EngineError
                emit(exc)
            finally:
                emit(None)

        thread = threading.Thread(target=work, name=f"hf-{request_id}", daemon=True)
        thread.start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise EngineError(str(item)) from item
                yield item
        finally:
            cancelled.set()  # a client that left stops the loop at the next token

    def _generate_one(self, prompt_ids: list[int], sampling: Sampling, adapter: AdapterHandle | None, index: int,
                      emit, cancelled: threading.Event) -> None:
        import torch

        generator = torch.Generator()
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed + index)
        else:
            generator.seed()
        configured = getattr(self._model.generation_config, "eos_token_id", None)
        eos = ({self._tokenizer.eos_token_id} | set(configured if isinstance(configured, list) else [configured])) - {None}
        generated: list[int] = []
        text_so_far = ""
        past = None
        inputs = torch.tensor([prompt_ids])
        finish = "length"
        with self._lock, self._activate(adapter), torch.no_grad():
            for _ in range(sampling.max_tokens):
                if cancelled.is_set():
                    finish = "abort"
                    break
                out = self._model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                token_id = self._pick(logits, sampling, generator)
                logprob_info = self._logprob(logits, token_id, sampling.logprobs)
                if token_id in eos:
                    # Like vLLM: the end-of-turn token counts as output (usage, logprobs) but adds no text.
                    emit(Delta(index, "", [token_id], len(prompt_ids), None, logprob_info))
                    finish = "stop"
                    break
                generated.append(token_id)
                full = self._tokenizer.decode(generated, skip_special_tokens=True)
                stop_at = min((full.find(s) for s in sampling.stop if s and s in full), default=-1)
                if stop_at >= 0:
                    emit(Delta(index, full[len(text_so_far):stop_at] if stop_at > len(text_so_far) else "",
                               [token_id], len(prompt_ids), None, logprob_info))
                    finish = "stop"
                    text_so_far = full[:stop_at]
                    break
                emit(Delta(index, full[len(text_so_far):], [token_id], len(prompt_ids), None, logprob_info))
                text_so_far = full
                inputs = torch.tensor([[token_id]])
        emit(Delta(index, "", [], len(prompt_ids), finish, None))

    @staticmethod
    def _pick(logits: Any, sampling: Sampling, generator: Any) -> int:
        import torch

        if sampling.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < sampling.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=generator))

    def _logprob(self, logits: Any, token_id: int, k: int | None) -> list[TokenLogprob] | None:
        if k is None:
            return None
        import torch

        logps = torch.log_softmax(logits, dim=-1)
        top = torch.topk(logps, k).indices.tolist() if k else []
        name = self.token_text
        return [TokenLogprob(name(token_id), float(logps[token_id]), [(name(t), float(logps[t])) for t in top])]

"""The reference engine: transformers + PEFT, several adapters on one base model, one request at a time.

It is slow on purpose-simple: plain forward passes with a KV cache, and vLLM's sampling written out in the order
vLLM's sampler applies it (logit bias and min_tokens, then repetition / frequency / presence penalties, then greedy,
or temperature, min_p, top_k, top_p). Its job is to be obviously right, so that `vllm` can be checked against it
token for token on the same adapter. It has no grammar engine: a request for structured output (response_format) is
refused with `EngineRequestError` (a 400), never served as free text.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from core.config import engine_dtype
from core.peft_adapters import PeftAdapters, UnknownAdapter
from server.engines.base import (AdapterHandle, Candidate, Delta, EngineError, EngineRequestError, Sampling,
                                 TokenLogprob, non_finite)


class HfEngine:
    name = "hf"

    def __init__(self, model_dir: Path, max_model_len: int = 2048, dtype: str = "bfloat16"):
        self.model_dir = Path(model_dir)
        self.max_model_len = max_model_len
        self.dtype = dtype  # "auto" is resolved at start (engine_dtype)
        self._adapters: PeftAdapters | None = None  # the model and its adapters, by LoRA id (set by start())
        self._tokenizer: Any = None
        self._lock = threading.Lock()  # PEFT's active adapter is global state: one forward pass at a time

    async def start(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.dtype = engine_dtype(self.dtype, on_gpu=torch.cuda.is_available())
        model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=getattr(torch, self.dtype))
        model.eval()
        self._adapters = PeftAdapters(model)

    async def shutdown(self) -> None:
        self._adapters = None

    @property
    def _model(self) -> Any:
        """The model to call: the base model, or the PeftModel around it once an adapter was loaded."""
        return self._adapters.model if self._adapters is not None else None

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
        with self._lock:
            try:
                self._adapters.load(adapter.lora_id, adapter.path)
            except Exception as exc:
                raise EngineError(f"PEFT could not load {adapter.ref}: {exc}") from exc

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        with self._lock:
            self._adapters.unload(adapter.lora_id)

    @contextlib.contextmanager
    def _activate(self, adapter: AdapterHandle | None):
        """Select the adapter (or none) for the forward passes inside; call with the lock held."""
        try:
            with self._adapters.active(adapter.lora_id if adapter else None):
                yield
        except UnknownAdapter:
            raise EngineError(f"{adapter.ref} is not loaded in the hf engine.") from None

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
        token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[len(prompt_ids) - 1:]
        if not bool(torch.isfinite(token_logps).all()):
            raise non_finite(adapter.ref if adapter else "base", "a scored token")
        return token_logps.tolist()

    # ---- generation -----------------------------------------------------------------------------------------------
    def _refusal(self, prompt_ids: list[int], sampling: Sampling) -> str | None:
        """Why this engine cannot serve the request as asked, or None."""
        if sampling.structured():
            return ("the hf reference engine has no structured-output (grammar) support, so response_format "
                    "json_object / json_schema cannot be honoured; serve with the vllm engine")
        vocab = self._model.get_input_embeddings().weight.shape[0]
        for name, ids in (("logit_bias", list(sampling.logit_bias or {})), ("stop_token_ids", sampling.stop_token_ids),
                          ("prompt", prompt_ids)):
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                return f"token id(s) {bad[:10]} in {name} are out of vocabulary (vocabulary size {vocab})"
        return None

    async def generate(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None,
                       request_id: str) -> AsyncIterator[Delta]:
        prompt_ids = prompt if isinstance(prompt, list) else self._tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if reason := self._refusal(list(prompt_ids), sampling):
            raise EngineRequestError(reason)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                prompt_logprobs = (self._prompt_logprobs(list(prompt_ids), sampling.prompt_logprobs, adapter)
                                   if sampling.prompt_logprobs is not None else None)
                for index in range(sampling.n):
                    self._generate_one(list(prompt_ids), sampling, adapter, index, emit, cancelled,
                                       prompt_logprobs if index == 0 else None)
            except Exception as exc:  # surfaced to the caller as an EngineError
                emit(exc)
            finally:
                emit(None)

        thread = threading.Thread(target=work, name=f"hf-{request_id}", daemon=True)
        thread.start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, EngineError):
                    raise item
                if isinstance(item, Exception):
                    raise EngineError(str(item)) from item
                yield item
        finally:
            cancelled.set()  # a client that left stops the loop at the next token

    def _prompt_logprobs(self, prompt_ids: list[int], k: int, adapter: AdapterHandle | None) -> list:
        """vLLM's prompt log-probs: None for the first token, then the actual token and the k most likely."""
        import torch

        with self._lock, self._activate(adapter), torch.no_grad():
            logits = self._model(input_ids=torch.tensor([prompt_ids])).logits[0].float()
        logps = torch.log_softmax(logits, dim=-1)
        result: list = [None]
        for position, token_id in enumerate(prompt_ids[1:]):
            row = logps[position]
            rank = int((row > row[token_id]).sum()) + 1
            entry = [Candidate(token_id, self.token_text(token_id), float(row[token_id]), rank)]
            top = torch.topk(row, k) if k else None
            for r, (value, tid) in enumerate(zip(top.values.tolist(), top.indices.tolist()) if top else [], 1):
                if tid != token_id:
                    entry.append(Candidate(tid, self.token_text(tid), float(value), r))
            result.append(entry)
        return result

    def _generate_one(self, prompt_ids: list[int], sampling: Sampling, adapter: AdapterHandle | None, index: int,
                      emit, cancelled: threading.Event, prompt_logprobs: list | None = None) -> None:
        import torch

        generator = torch.Generator()
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed + index)
        else:
            generator.seed()
        configured = getattr(self._model.generation_config, "eos_token_id", None)
        eos = ({self._tokenizer.eos_token_id} | set(configured if isinstance(configured, list) else [configured])) - {None}
        stop_ids = set(sampling.stop_token_ids)
        generated: list[int] = []  # every output token (for penalties and usage)
        shown: list[int] = []  # the tokens whose text the client sees
        text_so_far = ""
        past = None
        inputs = torch.tensor([prompt_ids])
        finish = "length"
        first = prompt_logprobs
        with self._lock, self._activate(adapter), torch.no_grad():
            for _ in range(sampling.max_tokens):
                if cancelled.is_set():
                    finish = "abort"
                    break
                out = self._model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                if not bool(torch.isfinite(logits).all()):
                    raise non_finite(adapter.ref if adapter else "base", f"output token {len(generated) + 1}")
                token_id = self._pick(self._process(logits, prompt_ids, generated, sampling, eos | stop_ids),
                                      sampling, generator)
                logprob_info = self._logprob(logits, token_id, sampling.logprobs)  # raw logits, as vLLM reports
                generated.append(token_id)
                inputs = torch.tensor([[token_id]])
                ends = token_id in stop_ids or (token_id in eos and not sampling.ignore_eos)
                if ends:
                    # Like vLLM: the end-of-turn / stop token counts as output (usage, logprobs) but adds no text.
                    emit(Delta(index, "", [token_id], len(prompt_ids), None, logprob_info, first))
                    finish = "stop"
                    break
                shown.append(token_id)
                full = self._tokenizer.decode(shown, skip_special_tokens=True)
                stop_at = min((full.find(s) for s in sampling.stop if s and s in full), default=-1)
                if stop_at >= 0:
                    emit(Delta(index, full[len(text_so_far):stop_at] if stop_at > len(text_so_far) else "",
                               [token_id], len(prompt_ids), None, logprob_info, first))
                    finish = "stop"
                    text_so_far = full[:stop_at]
                    break
                emit(Delta(index, full[len(text_so_far):], [token_id], len(prompt_ids), None, logprob_info, first))
                first = None
                text_so_far = full
        emit(Delta(index, "", [], len(prompt_ids), finish, None, first))

    @staticmethod
    def _process(logits: Any, prompt_ids: list[int], generated: list[int], sampling: Sampling,
                 ends: set[int]) -> Any:
        """The logits vLLM's sampler would sample from before temperature: bias, min_tokens, then penalties."""
        import torch

        logits = logits.clone()
        for token_id, bias in (sampling.logit_bias or {}).items():
            logits[token_id] += bias
        if len(generated) < sampling.min_tokens and ends:
            logits[list(ends)] = float("-inf")
        if sampling.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(prompt_ids) | set(generated)), dtype=torch.long)
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / sampling.repetition_penalty,
                                       values * sampling.repetition_penalty)
        if generated and (sampling.frequency_penalty or sampling.presence_penalty):
            counts = torch.bincount(torch.tensor(generated), minlength=logits.shape[0]).to(logits.dtype)
            logits -= sampling.frequency_penalty * counts + sampling.presence_penalty * (counts > 0).to(logits.dtype)
        return logits

    @staticmethod
    def _pick(logits: Any, sampling: Sampling, generator: Any) -> int:
        import torch

        if sampling.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.min_p > 0:
            probs = torch.where(probs < sampling.min_p * probs.max(), torch.zeros_like(probs), probs)
        if sampling.top_k > 0:
            kth = torch.topk(probs, min(sampling.top_k, probs.shape[0])).values[-1]
            probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
        if sampling.top_p < 1.0:
            probs = probs / probs.sum()
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

"""Drive an existing vLLM OpenAI server (one box, or a cluster behind one URL) as Palate's engine.

This is how Palate scales past one machine: vLLM does tensor/pipeline parallelism, replicas and routing; Palate adds
its registry, preflight, aliases, arena and evaluation on top. Adapters are loaded through vLLM's runtime LoRA
endpoints (the server must run with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora), and the adapter
directories must be readable at the same path by the vLLM server (shared storage).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from server.engines.base import AdapterHandle, Delta, EngineError, Sampling, TokenLogprob


class RemoteEngine:
    name = "remote"

    def __init__(self, url: str, model_dir: Path, max_model_len: int = 2048, timeout_s: float = 600.0):
        self.url = url.rstrip("/")
        self.model_dir = Path(model_dir)  # for the tokenizer and chat template, which must match the remote model
        self.max_model_len = max_model_len
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None
        self._tokenizer: Any = None
        self._base_name: str | None = None

    async def start(self) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self._client = httpx.AsyncClient(base_url=self.url, timeout=self.timeout_s)
        try:
            models = (await self._client.get("/v1/models")).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise EngineError(f"Cannot reach a vLLM server at {self.url}: {exc}") from exc
        # The base model is the entry that is not a LoRA (vLLM lists adapters with parent = base name).
        self._base_name = next(m["id"] for m in models if not m.get("parent"))

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def dead(self) -> str | None:
        return None

    def tokenizer(self) -> Any:
        return self._tokenizer

    def _model(self, adapter: AdapterHandle | None) -> str:
        return adapter.ref if adapter else self._base_name

    async def generate(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None,
                       request_id: str) -> AsyncIterator[Delta]:
        body = {"model": self._model(adapter), "prompt": prompt, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "n": sampling.n,
                "stop": sampling.stop or None, "seed": sampling.seed, "logprobs": sampling.logprobs,
                "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}
        prompt_tokens = len(prompt) if isinstance(prompt, list) else 0
        async with self._client.stream("POST", "/v1/completions", json=body,
                                       headers={"X-Request-Id": request_id}) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                raise EngineError(f"vLLM server answered {response.status_code}: {text[:300]}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    prompt_tokens = chunk["usage"]["prompt_tokens"]
                for choice in chunk.get("choices", []):
                    logprobs = None
                    if choice.get("logprobs"):
                        lp = choice["logprobs"]
                        logprobs = [TokenLogprob(tok, val, sorted((top or {}).items(), key=lambda kv: -kv[1]))
                                    for tok, val, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])]
                    token_ids = choice.get("token_ids") or []
                    yield Delta(choice["index"], choice.get("text", ""), list(token_ids), prompt_tokens,
                                choice.get("finish_reason"), logprobs)

    async def score(self, prompt_ids: list[int], completion_ids: list[int],
                    adapter: AdapterHandle | None) -> list[float]:
        ids = list(prompt_ids) + list(completion_ids)
        response = await self._client.post("/v1/completions", json={
            "model": self._model(adapter), "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0})
        if response.status_code != 200:
            raise EngineError(f"vLLM server answered {response.status_code}: {response.text[:300]}")
        entries = response.json()["choices"][0]["prompt_logprobs"]
        return [float(entries[i][str(ids[i])]["logprob"]) for i in range(len(prompt_ids), len(ids))]

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        response = await self._client.post("/v1/load_lora_adapter",
                                           json={"lora_name": adapter.ref, "lora_path": str(adapter.path)})
        if response.status_code != 200:
            raise EngineError(f"The vLLM server refused {adapter.ref}: {response.text[:300]}")

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        response = await self._client.post("/v1/unload_lora_adapter", json={"lora_name": adapter.ref})
        if response.status_code != 200:
            raise EngineError(f"The vLLM server could not unload {adapter.ref}: {response.text[:300]}")

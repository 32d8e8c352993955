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

from server.engines.base import AdapterHandle, Candidate, Delta, EngineError, EngineRequestError, Sampling, TokenLogprob


def _refusal(status: int, text: str) -> EngineError:
    """vLLM's 4xx is the client's mistake (a 400 here, with vLLM's reason); anything else is an engine failure."""
    try:
        message = json.loads(text)["error"]["message"]
    except Exception:  # noqa: BLE001 - not vLLM's error shape
        message = text[:300]
    if 400 <= status < 500:
        return EngineRequestError(f"the vLLM server refused it ({status}): {message}")
    return EngineError(f"vLLM server answered {status}: {message}")


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

    def request_body(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None) -> dict:
        """vLLM's /v1/completions body for `sampling`: every field passes through under vLLM's own name."""
        body = {"model": self._model(adapter), "prompt": prompt, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "n": sampling.n,
                "stop": sampling.stop or None, "seed": sampling.seed, "logprobs": sampling.logprobs,
                "frequency_penalty": sampling.frequency_penalty, "presence_penalty": sampling.presence_penalty,
                "repetition_penalty": sampling.repetition_penalty, "top_k": sampling.top_k, "min_p": sampling.min_p,
                "min_tokens": sampling.min_tokens, "ignore_eos": sampling.ignore_eos,
                "stop_token_ids": list(sampling.stop_token_ids),
                "logit_bias": {str(k): v for k, v in sampling.logit_bias.items()} if sampling.logit_bias else None,
                "return_token_ids": True}
        if sampling.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": sampling.json_schema}}
        elif sampling.json_object:
            body["response_format"] = {"type": "json_object"}
        if sampling.prompt_logprobs is not None:  # vLLM gives prompt log-probs only without streaming
            body["prompt_logprobs"] = sampling.prompt_logprobs
        else:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    @staticmethod
    def _candidates(prompt_ids: list[int], entries: list) -> list[list[Candidate] | None]:
        result: list[list[Candidate] | None] = []
        for token_id, entry in zip(prompt_ids, entries):
            if entry is None:
                result.append(None)
                continue
            items = sorted(((int(tid), v) for tid, v in entry.items()), key=lambda kv: (kv[0] != token_id,
                                                                                         kv[1].get("rank") or 0))
            result.append([Candidate(tid, v.get("decoded_token") or "", float(v["logprob"]), int(v.get("rank") or 0))
                           for tid, v in items])
        return result

    async def _generate_once(self, body: dict, request_id: str) -> AsyncIterator[Delta]:
        """Without streaming (prompt log-probs): one delta per choice, the first carrying the prompt log-probs."""
        response = await self._client.post("/v1/completions", json=body, headers={"X-Request-Id": request_id})
        if response.status_code != 200:
            raise _refusal(response.status_code, response.text)
        data = response.json()
        prompt_tokens = data.get("usage", {}).get("prompt_tokens", 0)
        for n, choice in enumerate(sorted(data["choices"], key=lambda c: c["index"])):
            prompt_ids = choice.get("prompt_token_ids") or body["prompt"]
            yield Delta(choice["index"], choice.get("text", ""), list(choice.get("token_ids") or []), prompt_tokens,
                        choice.get("finish_reason"), self._logprobs(choice),
                        self._candidates(prompt_ids, choice.get("prompt_logprobs") or []) if n == 0 else None)

    @staticmethod
    def _logprobs(choice: dict) -> list[TokenLogprob] | None:
        if not choice.get("logprobs"):
            return None
        lp = choice["logprobs"]
        return [TokenLogprob(tok, val, sorted((top or {}).items(), key=lambda kv: -kv[1]))
                for tok, val, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])]

    async def generate(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None,
                       request_id: str) -> AsyncIterator[Delta]:
        body = self.request_body(prompt, sampling, adapter)
        if not body.get("stream"):
            async for delta in self._generate_once(body, request_id):
                yield delta
            return
        prompt_tokens = len(prompt) if isinstance(prompt, list) else 0
        async with self._client.stream("POST", "/v1/completions", json=body,
                                       headers={"X-Request-Id": request_id}) as response:
            if response.status_code != 200:
                raise _refusal(response.status_code, (await response.aread()).decode(errors="replace"))
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("error"):  # vLLM ends a failed stream with an error event
                    raise EngineError(f"vLLM server failed mid-stream: {str(chunk['error'])[:300]}")
                if chunk.get("usage"):
                    prompt_tokens = chunk["usage"]["prompt_tokens"]
                for choice in chunk.get("choices", []):
                    token_ids = choice.get("token_ids") or []
                    yield Delta(choice["index"], choice.get("text", ""), list(token_ids), prompt_tokens,
                                choice.get("finish_reason"), self._logprobs(choice))

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

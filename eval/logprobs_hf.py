"""Reference scorer: teacher-forced per-token log-probabilities through transformers + PEFT.

It has the same `score(prompt_ids, completion_ids, adapter)` method as the serving engines (the Engine protocol), so
`eval.scoring` drives it and the vLLM engine through one code path; the only difference is the arithmetic under it.
One base model is loaded once; every adapter is attached to it by name (PEFT multi-adapter) and picked per call;
`adapter=None` scores with the adapters disabled, i.e. the base model.

    log π(y_t | x, y_<t) = log_softmax(logits[t-1])[y_t]      for each completion position t

`score_many` batches sequences (right-padded; a causal model does not look right, so padding cannot change a
real position's logits) - that is what makes this path usable on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.peft_adapters import PeftAdapters

DTYPES = {"float32", "bfloat16", "float16"}


class HfScorer:
    """transformers + PEFT scorer. `adapter` arguments are anything with `.ref` and `.path` (an AdapterHandle or a
    registry AdapterVersion)."""

    name = "hf"

    def __init__(self, model_dir: Path | str, dtype: str = "float32", batch_size: int = 8):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.dtype = dtype
        self.batch_size = batch_size
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        base = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=getattr(torch, dtype))
        base.eval()
        self._adapters: PeftAdapters | None = PeftAdapters(base)  # adapters by ref
        self.max_model_len = int(getattr(base.config, "max_position_embeddings", 2048))

    def tokenizer(self) -> Any:
        return self._tokenizer

    def load_adapter_sync(self, adapter: Any) -> None:
        self._adapters.load(adapter.ref, adapter.path)

    async def load_adapter(self, adapter: Any) -> None:
        self.load_adapter_sync(adapter)

    def _forward_logps(self, model: Any, sequences: Sequence[tuple[list[int], list[int]]]) -> list[list[float]]:
        torch = self._torch
        ids = [list(p) + list(c) for p, c in sequences]
        width = max(len(x) for x in ids)
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        out = []
        for row, (prompt, completion) in enumerate(sequences):
            start = len(prompt) - 1  # logits at position t-1 predict token t
            out.append(logps[row, start:start + len(completion)].tolist())
        return out

    def score_many(self, sequences: Sequence[tuple[list[int], list[int]]], adapter: Any | None) -> list[list[float]]:
        """Per-token completion log-probs for each (prompt_ids, completion_ids), under `adapter` (None: base)."""
        if any(len(p) == 0 for p, _ in sequences):
            raise ValueError("a prompt must have at least one token to condition the first completion token on")
        if adapter is not None:
            self.load_adapter_sync(adapter)
        results: list[list[float] | None] = [None] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]) + len(sequences[i][1]))
        with self._adapters.active(adapter.ref if adapter is not None else None) as model:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                for index, logps in zip(chunk, self._forward_logps(model, [sequences[i] for i in chunk])):
                    results[index] = logps
        return [r for r in results if r is not None]

    async def score(self, prompt_ids: list[int], completion_ids: list[int], adapter: Any | None) -> list[float]:
        return self.score_many([(prompt_ids, completion_ids)], adapter)[0]

    async def start(self) -> None:  # the model is loaded in __init__; kept for Engine-protocol symmetry
        return None

    async def shutdown(self) -> None:
        self._adapters = None

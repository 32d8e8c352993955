"""Score preference pairs under several models through any scorer with the Engine protocol's `score()`.

The serving engine (vLLM prompt log-probs, base + every adapter in one engine) is the default; `eval.logprobs_hf`
is the transformers + PEFT cross-check. Both receive the same token ids (`eval.pairs.tokenize_pair`), so their
results differ only by arithmetic.

A model is named as the API names it: "base", an alias ("sft", "dpo") or "name@version". An adapter's reference
for DPO's implicit reward is its parent in the registry (palate.json "parent"; the base model when it has none), and
β is the one its DPO run used (palate.json config.beta).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.registry import AdapterRegistry
from eval.margins import PairLogps
from eval.pairs import TokenizedPair

BASE = "base"


@dataclass(frozen=True)
class ScoredModel:
    """A model to score: its label as asked for, the exact version it resolved to, and its DPO reference."""

    label: str  # what the user asked for: "dpo"
    ref: str  # what it resolved to: "dpo@2" (or "base")
    path: Any  # adapter directory; None for the base model
    reference: str | None  # "sft@1", "base", or None when no implicit reward applies (base, SFT adapters)
    beta: float | None
    meta: dict

    def record(self) -> dict:
        """What a result file records about this model: what was asked for, what it resolved to, its lineage."""
        meta = self.meta
        return {"label": self.label, "ref": self.ref, "kind": meta.get("kind", "base"),
                "content_sha256": meta.get("content_sha256"), "parent": meta.get("parent"),
                "dataset_sha256": meta.get("dataset_sha256"), "reference": self.reference, "beta": self.beta}


def _beta(meta: dict) -> float | None:
    """The DPO run's β: palate.json config.trl.beta (training.config JobSpec.as_record), else config.beta."""
    config = meta.get("config") or {}
    beta = (config.get("trl") or {}).get("beta", config.get("beta"))
    return float(beta) if beta is not None else None


def resolve_models(registry: AdapterRegistry, labels: Sequence[str]) -> list[ScoredModel]:
    """Resolve model labels to exact versions (an alias is read once, here, so a moving alias cannot mix versions)."""
    models = []
    for label in labels:
        if label == BASE:
            models.append(ScoredModel(BASE, BASE, None, None, None, {}))
            continue
        version = registry.resolve(label)
        beta = _beta(version.meta)
        reference = None
        if version.kind == "dpo":
            reference = version.parent or BASE
        models.append(ScoredModel(label, version.ref, version.path, reference, beta, dict(version.meta)))
    return models


def with_references(registry: AdapterRegistry, models: list[ScoredModel]) -> list[ScoredModel]:
    """`models` plus every DPO reference not already among them (scored too, so rewards can be computed)."""
    have = {m.ref for m in models}
    extra = [r for r in dict.fromkeys(m.reference for m in models if m.reference) if r not in have]
    return models + resolve_models(registry, extra)


async def score_pairs(scorer: Any, pairs: Sequence[TokenizedPair], adapter: Any | None,
                      concurrency: int = 32) -> list[PairLogps]:
    """Per-token log-probs of every pair's chosen and rejected completion under `adapter` (None: the base model).

    A scorer with `score_many` (the HF reference) gets whole batches; an engine gets concurrent `score` calls, which
    it batches itself (vLLM's scheduler)."""
    requests = [(p.prompt_ids, c) for p in pairs for c in (p.chosen_ids, p.rejected_ids)]
    if hasattr(scorer, "score_many"):
        results = await asyncio.to_thread(scorer.score_many, requests, adapter)
    else:
        gate = asyncio.Semaphore(concurrency)

        async def one(prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
            async with gate:
                return await scorer.score(prompt_ids, completion_ids, adapter)

        results = await asyncio.gather(*(one(p, c) for p, c in requests))
    out = []
    for i, pair in enumerate(pairs):
        chosen, rejected = results[2 * i], results[2 * i + 1]
        if len(chosen) != len(pair.chosen_ids) or len(rejected) != len(pair.rejected_ids):
            raise RuntimeError(f"{getattr(scorer, 'name', 'scorer')} returned the wrong number of log-probs for "
                               f"pair {pair.pair_id}")
        out.append(PairLogps(pair.pair_id, pair.kind, tuple(chosen), tuple(rejected)))
    return out

"""`palate eval margins`: score held-out preference pairs under each model and summarise, with provenance.

The result is plain JSON: the data file and its sha256, the scorer (engine and dtype), and per model the exact version
(content hash, parent, β), the summary per near-miss kind (`eval.margins.summarize_by_kind`) and every pair's
numbers, so a report can redraw distributions without rescoring.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.registry import AdapterRegistry
from eval.margins import PairLogps, summarize_by_kind
from eval.pairs import file_sha256, read_pairs, tokenize_pair
from eval.scoring import resolve_models, score_pairs, with_references


def _pair_rows(pairs: list[PairLogps], ref: list[PairLogps] | None, beta: float | None) -> list[dict]:
    rows = []
    for i, p in enumerate(pairs):
        row = {"id": p.pair_id, "kind": p.kind, "chosen_logp": p.chosen_logp, "rejected_logp": p.rejected_logp,
               "chosen_tokens": len(p.chosen), "rejected_tokens": len(p.rejected),
               "margin": p.chosen_logp - p.rejected_logp}
        if ref is not None and beta is not None:
            r = ref[i]
            row["reward_margin"] = beta * ((p.chosen_logp - r.chosen_logp) - (p.rejected_logp - r.rejected_logp))
        rows.append(row)
    return rows


async def compute_margins(scorer: Any, registry: AdapterRegistry, labels: list[str], data: Path | str,
                          limit: int | None = None, kinds: set[str] | None = None,
                          handles: dict[str, Any] | None = None, progress: Any = print) -> dict:
    """Score `data` under every model in `labels` (plus the DPO references they need) with `scorer`.

    `handles` maps an adapter ref to what `scorer` takes as an adapter (AdapterHandle for an engine); by default the
    resolved model itself (it has .ref and .path, which the HF scorer needs). Adapters are loaded once, up front."""
    rows = read_pairs(data, limit=limit, kinds=kinds)
    tokenizer = scorer.tokenizer()
    pairs = [tokenize_pair(tokenizer, row) for row in rows]
    requested = resolve_models(registry, labels)
    models = with_references(registry, requested)
    handles = handles or {m.ref: m for m in models if m.path is not None}
    for model in models:
        if model.path is not None:
            await scorer.load_adapter(handles[model.ref])
    scored: dict[str, list[PairLogps]] = {}
    timings: dict[str, float] = {}
    for model in models:
        if model.ref in scored:
            continue
        started = time.perf_counter()
        scored[model.ref] = await score_pairs(scorer, pairs, handles.get(model.ref) if model.path else None)
        timings[model.ref] = time.perf_counter() - started
        progress(f"  scored {len(pairs)} pairs under {model.ref} in {timings[model.ref]:.1f}s")
    out_models = []
    for model in requested:
        ref_pairs = scored.get(model.reference) if model.reference and model.beta is not None else None
        by_kind = summarize_by_kind(scored[model.ref], ref_pairs, model.beta if ref_pairs else None)
        record = model.record()
        record["summary"] = {kind: asdict(s) for kind, s in by_kind.items()}
        for summary in record["summary"].values():
            if summary["rewards"]:
                summary["rewards"].pop("per_pair_margins", None)
        record["pairs"] = _pair_rows(scored[model.ref], ref_pairs, model.beta)
        record["seconds"] = timings[model.ref]
        out_models.append(record)
    return {
        "data": {"path": str(data), "sha256": file_sha256(data), "n_pairs": len(pairs),
                 "kinds": sorted({p.kind for p in pairs})},
        "scorer": {"name": getattr(scorer, "name", type(scorer).__name__),
                   "dtype": getattr(scorer, "dtype", None)},
        "models": out_models,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

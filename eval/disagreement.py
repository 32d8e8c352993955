"""Order exported DPO pairs by disagreement: the pairs where a DPO version prefers the people's loser most first.

Each exported row (TRL conversational prompt/chosen/rejected, `core.vote_export`) is scored under the version and
its reference with `eval.scoring.score_pairs`; its implicit-reward margin

    m = β * [(log π(chosen|x) - log π_ref(chosen|x)) - (log π(rejected|x) - log π_ref(rejected|x))]

is negative when the model prefers the rejected answer. Rows are sorted by m ascending (the most negative first;
ties keep export order) and each row's provenance records `disagreement` {model, reference, beta, reward_margin}.
"""

from __future__ import annotations

from typing import Any

from eval.agreement import reward_margins
from eval.pairs import PreferenceRow, tokenize_pair
from eval.scoring import resolve_models, score_pairs


def order_rows(rows: list[dict], margins: list[float], record: dict) -> list[dict]:
    """`rows` sorted by `margins` ascending (stable), each with provenance.disagreement = record + its margin."""
    out = []
    for row, margin in zip(rows, margins, strict=True):
        provenance = {**row.get("provenance", {}), "disagreement": {**record, "reward_margin": margin}}
        out.append({**row, "provenance": provenance})
    order = sorted(range(len(out)), key=lambda i: margins[i])
    return [out[i] for i in order]


async def order_by_disagreement(scorer: Any, registry: Any, label: str, rows: list[dict],
                                handles: dict[str, Any] | None = None) -> list[dict]:
    """Score `rows` under DPO version `label` and its reference; return them in disagreement order."""
    if not rows:
        return []
    (version,) = resolve_models(registry, [label])
    if version.reference is None or version.beta is None:
        raise ValueError(f"{label} ({version.ref}) has no implicit reward: --order disagreement needs a DPO version")
    models = {m.ref: m for m in resolve_models(registry, [version.ref, version.reference])}
    handles = handles or {ref: m for ref, m in models.items() if m.path is not None}
    for ref, model in models.items():
        if model.path is not None:
            await scorer.load_adapter(handles[ref])
    tokenizer = scorer.tokenizer()
    pairs = [tokenize_pair(tokenizer, PreferenceRow(str(i), r["prompt"], r["chosen"], r["rejected"]))
             for i, r in enumerate(rows)]
    scored = {ref: await score_pairs(scorer, pairs, handles.get(ref) if models[ref].path else None)
              for ref in models}
    by_id = reward_margins(scored[version.ref], scored[version.reference], version.beta)
    record = {"model": version.ref, "reference": version.reference, "beta": version.beta}
    return order_rows(rows, [by_id[str(i)] for i in range(len(rows))], record)

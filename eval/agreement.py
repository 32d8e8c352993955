"""Agreement with people: does a DPO version's own implicit reward prefer the answer people voted for?

Each rated people's vote is a labelled pair (the winner's answer as shown, the loser's). A version v with reference
ref (its parent; the base model when it has none) and β (its DPO run's) gives the pair the reward margin

    m = β * [(log π_v(win|x) - log π_ref(win|x)) - (log π_v(lose|x) - log π_ref(lose|x))]

and agrees with the vote when m > 0 (m == 0 counts half). The agreement rate carries a Wilson 95 % interval,
overall and by reason tag (a vote counts under each of its tags; "untagged" when it has none).

Which votes count: one source at a time, never mixed - people's (the default) or the simulated judges' (`palate
loop`), told apart by the leaderboard's rule (`server.arena.views.vote_source`) - with the leaderboard's exclusions
(identity leak, error or truncated side); ties and both-bad votes say nothing about a pair and are left out too.
Scoring goes through `eval.scoring.score_pairs` with any scorer (the engine, or `eval.logprobs_hf.HfScorer`).
`agreement_records` turns a result into the per-version records the registry keeps (`/v1/models`, the leaderboard).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from core.vote_export import prompt_messages
from core.votes import BattleRecord
from core.ratings import wilson_interval
from eval.margins import PairLogps
from eval.pairs import PreferenceRow, tokenize_pair
from eval.scoring import resolve_models, score_pairs
from server.arena.views import exclusion, vote_source

UNTAGGED = "untagged"
SOURCES = ("people", "simulated")


def vote_pairs(battles: Iterable[BattleRecord], simulated_ui_versions: Iterable[str], source: str = "people") \
        -> tuple[list[PreferenceRow], dict[str, list[str]], dict[str, int]]:
    """(pairs, tags by pair id, excluded counts by reason) from the stored battles of one vote `source`. A pair's id
    is its battle id, its `chosen` the winner's answer as the judge saw it (not a later edit)."""
    if source not in SOURCES:
        raise ValueError(f"vote source must be one of {', '.join(SOURCES)}, got '{source}'")
    simulated = list(simulated_ui_versions)
    rows, tags, excluded = [], {}, Counter()
    for battle in battles:
        if battle.vote is None:
            continue
        other = vote_source(battle, simulated)
        if other != source:
            excluded[other] += 1
            continue
        reason = exclusion(battle)
        if reason:
            excluded[reason] += 1
            continue
        win = battle.vote.winner
        if win not in ("A", "B"):
            excluded[win] += 1
            continue
        lose = "B" if win == "A" else "A"
        rows.append(PreferenceRow(battle.id, prompt_messages(battle, win),
                                  [{"role": "assistant", "content": battle.sides[win].response or ""}],
                                  [{"role": "assistant", "content": battle.sides[lose].response or ""}]))
        tags[battle.id] = sorted(battle.vote.reasons) or [UNTAGGED]
    return rows, tags, dict(excluded)


def reward_margins(model: Sequence[PairLogps], reference: Sequence[PairLogps], beta: float) -> dict[str, float]:
    """m (module docstring) of every pair, by pair id; `model` and `reference` score the same pairs in order."""
    return {p.pair_id: beta * ((p.chosen_logp - r.chosen_logp) - (p.rejected_logp - r.rejected_logp))
            for p, r in zip(model, reference, strict=True)}


def _rate(margins: Iterable[float]) -> dict:
    values = list(margins)
    agree = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in values)
    lo, hi = wilson_interval(agree, len(values))
    return {"n": len(values), "agree": agree, "rate": agree / len(values) if values else None, "wilson95": [lo, hi]}


def agreement_summary(margins: dict[str, float], tags: dict[str, list[str]]) -> dict:
    """{"overall": rate, "by_reason": {tag: rate}}; a rate is n, agree (half for m == 0), rate and wilson95."""
    by_tag: dict[str, list[float]] = {}
    for pair_id, margin in margins.items():
        for tag in tags.get(pair_id, [UNTAGGED]):
            by_tag.setdefault(tag, []).append(margin)
    return {"overall": _rate(margins.values()), "by_reason": {t: _rate(v) for t, v in sorted(by_tag.items())}}


async def compute_agreement(scorer: Any, registry: Any, label: str, battles: Iterable[BattleRecord],
                            simulated_ui_versions: Iterable[str], handles: dict[str, Any] | None = None,
                            source: str = "people") -> dict:
    """Agreement of DPO version `label` and of its parent (each against its own reference, with `label`'s β) with
    the votes of one `source`."""
    rows, tags, excluded = vote_pairs(battles, simulated_ui_versions, source)
    (version,) = resolve_models(registry, [label])
    if version.reference is None or version.beta is None:
        raise ValueError(f"{label} ({version.ref}) has no implicit reward: agreement needs a DPO version")
    chain = [version.ref, version.reference]
    if version.reference != "base":
        (parent,) = resolve_models(registry, [version.reference])
        chain.append(parent.meta.get("parent") or "base")
    models = {m.ref: m for m in resolve_models(registry, list(dict.fromkeys(chain)))}
    handles = handles or {ref: m for ref, m in models.items() if m.path is not None}
    for ref, model in models.items():
        if model.path is not None:
            await scorer.load_adapter(handles[ref])
    tokenizer = scorer.tokenizer()
    pairs = [tokenize_pair(tokenizer, row) for row in rows]
    scored = {ref: await score_pairs(scorer, pairs, handles.get(ref) if models[ref].path else None)
              for ref in models}
    result = {"source": source, "votes": len(rows), "excluded": excluded, "beta": version.beta, "versions": []}
    for ref, reference in zip(chain, chain[1:]):
        margins = reward_margins(scored[ref], scored[reference], version.beta)
        result["versions"].append({"ref": ref, "reference": reference, **agreement_summary(margins, tags),
                                   "margins": margins})
    return result


def agreement_records(result: dict) -> list[tuple[str, dict]]:
    """(version ref, record) for each version in a `compute_agreement` result: what the registry keeps of it (the
    rates and their source, not every pair's margin)."""
    return [(v["ref"], {"source": result.get("source", "people"), "reference": v["reference"], "beta": result["beta"],
                        "votes": result["votes"], "overall": v["overall"], "by_reason": v["by_reason"]})
            for v in result["versions"]]


def rate_text(rate: dict | None) -> str:
    """'0.67 [0.21, 0.94] (n=3)', or '–' when nothing was scored."""
    if not rate or not rate.get("n"):
        return "–"
    return f"{rate['rate']:.2f} [{rate['wilson95'][0]:.2f}, {rate['wilson95'][1]:.2f}] (n={rate['n']})"


def agreement_table(result: dict) -> str:
    """Markdown: one row per version (against its reference), overall rate with Wilson 95 % and each reason tag."""
    tags = sorted({t for v in result["versions"] for t in v["by_reason"]})
    lines = ["| version | reference | agreement | " + " | ".join(tags) + " |",
             "|---|---|---|" + "---|" * len(tags)]
    for v in result["versions"]:
        lines.append(f"| {v['ref']} | {v['reference']} | {rate_text(v['overall'])} | "
                     + " | ".join(rate_text(v["by_reason"].get(t)) for t in tags) + " |")
    return "\n".join(lines)

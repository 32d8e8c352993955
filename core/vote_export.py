"""Arena votes → DPO preference pairs (TRL's conversational prompt/chosen/rejected format). Stdlib + the store.

Rules, applied per voted battle in this order (the first that applies is the battle's drop reason):

    tie, both_bad        no preference to learn
    same_contestant      both sides were the same model version
    error, truncated     a side failed or hit max_tokens (finish_reason length)
    identity_leak        an answer names a contestant: the judge may not have been blind
    empty                an answer is empty
    identical_answers    both answers are the same text (whitespace-normalised)

The surviving judgments are grouped by (prompt hash, unordered contestant pair). Each group becomes one row: the
contestant that won most of the group's judgments is chosen, using the texts of its latest win; a group without a
strict majority is dropped as `contested`; the other judgments of a kept group are counted as `merged_duplicate`.

Each row carries `provenance` (battle ids, contestants, vote tally), which TRL ignores. The lint summary has the
counts by drop reason, the chosen-longer rate (length bias) and the left-side (A) win rate (position bias).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.votes import BattleRecord

DROP_REASONS = ("tie", "both_bad", "same_contestant", "error", "truncated", "identity_leak", "empty",
                "identical_answers", "contested", "merged_duplicate")


@dataclass
class ExportResult:
    rows: list[dict]
    summary: dict = field(default_factory=dict)


def _normalise(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip())


def drop_reason(battle: BattleRecord) -> str | None:
    """Why a voted battle cannot become a pair, or None when it can."""
    winner = battle.vote.winner if battle.vote else None
    if winner in ("tie", "both_bad"):
        return winner
    if winner not in ("A", "B"):
        return "tie"
    a, b = battle.sides["A"], battle.sides["B"]
    if a.contestant == b.contestant:
        return "same_contestant"
    flags = {flag for side in (a, b) for flag in side.flags}
    if "error" in flags or "error" in (a.finish_reason, b.finish_reason):
        return "error"
    if "truncated" in flags or "length" in (a.finish_reason, b.finish_reason):
        return "truncated"
    if "identity_leak" in flags:
        return "identity_leak"
    if not _normalise(a.response) or not _normalise(b.response):
        return "empty"
    if _normalise(a.response) == _normalise(b.response):
        return "identical_answers"
    return None


def _row(battle: BattleRecord, group: list[BattleRecord], winner_model: str, tally: Counter) -> dict:
    win = battle.vote.winner
    lose = "B" if win == "A" else "A"
    prompt = ([{"role": "system", "content": battle.system}] if battle.system else []) + \
        [{"role": "user", "content": battle.prompt}]
    loser_model = battle.sides[lose].contestant
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": battle.sides[win].response}],
        "rejected": [{"role": "assistant", "content": battle.sides[lose].response}],
        "provenance": {
            "source": "palate-arena",
            "battle_id": battle.id,
            "battle_ids": [b.id for b in group],
            "chosen_model": winner_model,
            "rejected_model": loser_model,
            "prompt_sha256": battle.prompt_sha256,
            "votes_for": tally[winner_model],
            "votes_against": tally[loser_model],
        },
    }


def export_pairs(battles: Iterable[BattleRecord]) -> ExportResult:
    """Turn voted battles into de-duplicated DPO rows plus a lint summary (see the module docstring)."""
    drops: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    groups: dict[tuple[str, frozenset[str]], list[BattleRecord]] = defaultdict(list)
    total = decisive = left_wins = 0
    for battle in battles:
        if battle.vote is None:
            continue
        total += 1
        if battle.vote.winner in ("A", "B"):
            decisive += 1
            left_wins += battle.vote.winner == "A"
        reason = drop_reason(battle)
        if reason:
            drops[reason] += 1
            continue
        pair = frozenset((battle.sides["A"].contestant, battle.sides["B"].contestant))
        groups[(battle.prompt_sha256, pair)].append(battle)

    rows = []
    for group in groups.values():  # in order of each group's first judgment (battles arrive oldest vote first)
        group.sort(key=lambda b: (b.vote.voted_at, b.id))
        tally = Counter(b.winner_contestant() for b in group)
        (top, top_count), *rest = tally.most_common()
        if rest and rest[0][1] == top_count:
            drops["contested"] += len(group)
            continue
        drops["merged_duplicate"] += len(group) - 1
        latest_win = [b for b in group if b.winner_contestant() == top][-1]
        rows.append(_row(latest_win, group, top, tally))
    longer = sum(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in rows)
    summary = {
        "voted_battles": total,
        "rows": len(rows),
        "dropped": dict(drops),
        "chosen_longer_rate": round(longer / len(rows), 4) if rows else None,
        "left_side_win_rate": round(left_wins / decisive, 4) if decisive else None,
        "decisive_votes": decisive,
        "pairs_by_models": dict(Counter(f"{r['provenance']['chosen_model']} > {r['provenance']['rejected_model']}"
                                        for r in rows)),
    }
    return ExportResult(rows, summary)


def write_export(result: ExportResult, out: Path | str) -> dict:
    """Write rows as JSON lines to `out` (atomically) and the lint summary to `<out>.lint.json`; returns the
    summary with the file's sha256 (the dataset hash training records)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    payload = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in result.rows)
    tmp.write_text(payload, encoding="utf-8")
    tmp.replace(out)
    summary = dict(result.summary, out=str(out), sha256=hashlib.sha256(payload.encode("utf-8")).hexdigest())
    Path(f"{out}.lint.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def format_summary(summary: dict) -> str:
    """The lint summary as a few human-readable lines."""
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items() if v) or "none"
    lines = [f"{summary['rows']} DPO pairs from {summary['voted_battles']} voted battles",
             f"dropped: {dropped}",
             f"chosen longer than rejected: {_pct(summary['chosen_longer_rate'])} of pairs (length bias check)",
             f"left side (A) won: {_pct(summary['left_side_win_rate'])} of {summary['decisive_votes']} decisive votes "
             "(position bias check; ~50% expected)"]
    if summary.get("sha256"):
        lines.append(f"wrote {summary['out']} (sha256 {summary['sha256'][:16]}…)")
    return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"

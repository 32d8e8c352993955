"""Arena votes → DPO preference pairs (TRL's conversational prompt/chosen/rejected format). Stdlib + the store.

Rules, applied per voted battle in this order (the first that applies is the battle's drop reason):

    tie, both_bad        no preference to learn
    same_contestant      both sides were the same model version
    error, truncated     a side failed or hit max_tokens (finish_reason length)
    identity_leak        an answer names a contestant: the judge may not have been blind
    empty                an answer is empty
    diverged_history     a later turn of a multi-turn battle whose sides' earlier turns differ: a DPO row has one
                         prompt, so the earlier turns must be the same on both sides
    identical_answers    both answers are the same text (whitespace-normalised)

A multi-turn battle's prompt is the system message, the shared earlier turns and the latest user message. When the
judge edited the winning answer after the reveal, the edit is the chosen answer (`provenance.edited` is true).

The surviving judgments are grouped by (prompt hash, unordered contestant pair). Each group becomes one row: the
contestant that won most of the group's judgments is chosen, using the texts of its latest win; a group without a
strict majority is dropped as `contested`; the other judgments of a kept group are counted as `merged_duplicate`.

Each row carries `provenance` (battle ids, contestants, vote tally, reason tags and comment), which TRL ignores. The lint summary has the
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
                "diverged_history", "identical_answers", "contested", "merged_duplicate")


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
    problem = quality_problem(battle)
    if problem:
        return problem
    if _normalise(a.response) == _normalise(b.response):
        return "identical_answers"
    return None


def quality_problem(battle: BattleRecord) -> str | None:
    """Why a battle's answers cannot be training data whatever the vote: error, truncated, identity_leak, empty
    or diverged_history (in that order), else None."""
    a, b = battle.sides["A"], battle.sides["B"]
    flags = {flag for side in (a, b) for flag in side.flags}
    if "error" in flags or "error" in (a.finish_reason, b.finish_reason):
        return "error"
    if "truncated" in flags or "length" in (a.finish_reason, b.finish_reason):
        return "truncated"
    if "identity_leak" in flags:
        return "identity_leak"
    if not _normalise(a.response) or not _normalise(b.response):
        return "empty"
    if _history_key(a.history) != _history_key(b.history):
        return "diverged_history"
    return None


def _history_key(history: list[dict]) -> list[tuple[str, str]]:
    return [(m.get("role", ""), _normalise(m.get("content"))) for m in history]


def prompt_messages(battle: BattleRecord, side: str = "A") -> list[dict]:
    """The conversation up to this turn's answer: system, `side`'s earlier turns, this turn's user message."""
    system = [{"role": "system", "content": battle.system}] if battle.system else []
    history = [{"role": m["role"], "content": m["content"]} for m in battle.sides[side].history]
    return [*system, *history, {"role": "user", "content": battle.prompt}]


def group_key(battle: BattleRecord) -> str:
    """The prompt hash judgments are merged under: the battle's own for a first turn (as before multi-turn), the
    hash of the whole prompt conversation for a later turn."""
    if not battle.sides["A"].history:
        return battle.prompt_sha256
    return hashlib.sha256(json.dumps(prompt_messages(battle), sort_keys=True, ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def chosen_text(battle: BattleRecord) -> tuple[str, bool]:
    """The winning answer as the export uses it, and whether it is the judge's edit."""
    win = battle.vote.winner
    edited = battle.vote.edited_response
    if edited is not None and _normalise(edited):
        return edited, True
    return battle.sides[win].response or "", False


def _row(battle: BattleRecord, group: list[BattleRecord], winner_model: str, tally: Counter) -> dict:
    win = battle.vote.winner
    lose = "B" if win == "A" else "A"
    loser_model = battle.sides[lose].contestant
    chosen, edited = chosen_text(battle)
    return {
        "prompt": prompt_messages(battle, win),
        "chosen": [{"role": "assistant", "content": chosen}],
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
            "turn": battle.turn,
            "edited": edited,
            "reasons": sorted({r for b in group for r in b.vote.reasons}),
            "comments": [b.vote.comment for b in group if b.vote.comment],
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
        groups[(group_key(battle), pair)].append(battle)

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
        "edited_rows": sum(bool(r["provenance"]["edited"]) for r in rows),
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

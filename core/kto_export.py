"""Arena votes -> KTO rows (TRL's unpaired preference format: prompt, completion, label). Stdlib + the store.

KTO learns from single answers marked desirable or not, so votes a DPO pair cannot use still teach something:

    both_bad             both answers, label false
    A / B                the winner (the judge's edit when there is one) label true, the loser label false
    tie                  skipped: no verdict on either answer

Battles whose answers are not usable at all (error, truncated, identity_leak, empty; see `core.vote_export`) are
dropped with that reason. Each side of a multi-turn battle keeps its own earlier turns as its prompt (KTO rows are
unpaired, so the sides need not share them). The same (prompt, completion, label) is written once.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable

from core.vote_export import ExportResult, chosen_text, prompt_messages, quality_problem
from core.votes import SIDES, BattleRecord

KTO_DROP_REASONS = ("tie", "error", "truncated", "identity_leak", "empty", "duplicate")


def _rows_of(battle: BattleRecord) -> list[tuple[str, str, bool, bool]]:
    """(side, completion text, label, edited) for each answer this vote judges."""
    winner = battle.vote.winner
    if winner == "both_bad":
        return [(s, battle.sides[s].response or "", False, False) for s in SIDES]
    loser = "B" if winner == "A" else "A"
    text, edited = chosen_text(battle)
    return [(winner, text, True, edited), (loser, battle.sides[loser].response or "", False, False)]


def export_kto(battles: Iterable[BattleRecord]) -> ExportResult:
    """KTO rows and a summary (counts by drop reason, desirable / undesirable rows)."""
    drops: Counter[str] = Counter({reason: 0 for reason in KTO_DROP_REASONS})
    rows: list[dict] = []
    seen: set[str] = set()
    total = 0
    for battle in battles:
        if battle.vote is None:
            continue
        total += 1
        if battle.vote.winner == "tie":
            drops["tie"] += 1
            continue
        # diverged histories are fine here: each row carries its own side's conversation
        problem = quality_problem(battle)
        if problem and problem != "diverged_history":
            drops[problem] += 1
            continue
        for side, text, label, edited in _rows_of(battle):
            prompt = prompt_messages(battle, side)
            key = hashlib.sha256(json.dumps([prompt, text, label], ensure_ascii=False).encode()).hexdigest()
            if key in seen:
                drops["duplicate"] += 1
                continue
            seen.add(key)
            rows.append({
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": text}],
                "label": label,
                "provenance": {"source": "palate-arena", "battle_id": battle.id, "vote": battle.vote.winner,
                               "model": battle.sides[side].contestant, "side": side, "turn": battle.turn,
                               "edited": edited, "reasons": list(battle.vote.reasons),
                               "comment": battle.vote.comment},
            })
    desirable = sum(r["label"] for r in rows)
    summary = {"format": "kto", "voted_battles": total, "rows": len(rows), "desirable": desirable,
               "undesirable": len(rows) - desirable, "dropped": dict(drops)}
    return ExportResult(rows, summary)


def format_kto_summary(summary: dict) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items() if v) or "none"
    lines = [f"{summary['rows']} KTO rows ({summary['desirable']} desirable, {summary['undesirable']} undesirable) "
             f"from {summary['voted_battles']} voted battles", f"dropped: {dropped}"]
    if summary.get("sha256"):
        lines.append(f"wrote {summary['out']} (sha256 {summary['sha256'][:16]}…)")
    return "\n".join(lines)

"""Votes -> DPO pairs: every drop rule, majority de-duplication, provenance, lint summary, the validator, the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from core.vote_export import export_pairs, format_summary, write_export
from core.votes import BattleRecord, SideRecord, VoteRecord, VoteStore, prompt_hash

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
_clock = iter(range(10_000))


def voted(a: str, b: str, winner: str, *, prompt: str = "Describe a loft", text_a: str = "Warm loft, exposed brick.",
          text_b: str = "AMAZING loft!!!", finish_a: str = "stop", finish_b: str = "stop", flags_a=(),
          system: str | None = None) -> BattleRecord:
    tick = next(_clock)
    return BattleRecord(
        id=str(uuid.uuid4()), created_at=T0, prompt=prompt, system=system, prompt_sha256=prompt_hash(prompt, system),
        base_model="m", sampling={}, seed=1,
        sides={"A": SideRecord("A", a, response=text_a, finish_reason=finish_a, finished_at=T0, flags=list(flags_a)),
               "B": SideRecord("B", b, response=text_b, finish_reason=finish_b, finished_at=T0)},
        vote=VoteRecord(winner, T0 + dt.timedelta(seconds=tick)))


def test_drop_rules_each_counted():
    battles = [
        voted("sft@1", "base", "tie"), voted("sft@1", "base", "both_bad"),
        voted("sft@1", "sft@1", "A", prompt="p1"),
        voted("sft@1", "base", "A", prompt="p2", finish_b="error", flags_a=()),
        voted("sft@1", "base", "A", prompt="p3", finish_a="length"),
        voted("sft@1", "base", "A", prompt="p4", flags_a=["identity_leak"]),
        voted("sft@1", "base", "A", prompt="p5", text_a="Same  text.", text_b="Same text."),
        voted("sft@1", "base", "B", prompt="p6", text_a="  "),
        voted("dpo@1", "base", "A", prompt="kept"),
    ]
    result = export_pairs(battles)
    assert result.summary["dropped"] == {"tie": 1, "both_bad": 1, "same_contestant": 1, "error": 1, "truncated": 1,
                                         "identity_leak": 1, "empty": 1, "diverged_history": 0, "identical_answers": 1,
                                         "contested": 0, "merged_duplicate": 0}
    assert len(result.rows) == 1 and result.summary["voted_battles"] == 9
    row = result.rows[0]
    assert row["prompt"] == [{"role": "user", "content": "kept"}]
    assert row["chosen"] == [{"role": "assistant", "content": "Warm loft, exposed brick."}]
    assert row["rejected"] == [{"role": "assistant", "content": "AMAZING loft!!!"}]
    assert row["provenance"]["chosen_model"] == "dpo@1" and row["provenance"]["rejected_model"] == "base"
    assert row["provenance"]["battle_ids"] == [battles[-1].id]


def test_side_b_winner_and_system_prompt():
    row = export_pairs([voted("dpo@1", "base", "B", system="Be factual.")]).rows[0]
    assert row["prompt"][0] == {"role": "system", "content": "Be factual."}
    assert row["chosen"][0]["content"] == "AMAZING loft!!!" and row["provenance"]["chosen_model"] == "base"


def test_majority_dedup_and_contested():
    majority = [voted("dpo@1", "base", "A", text_a="first"), voted("base", "dpo@1", "B", text_b="latest dpo win"),
                voted("dpo@1", "base", "B")]  # dpo wins 2 of 3 (sides swapped in the middle one)
    contested = [voted("sft@1", "base", "A", prompt="q"), voted("sft@1", "base", "B", prompt="q")]
    result = export_pairs(majority + contested)
    assert len(result.rows) == 1
    row = result.rows[0]
    assert row["chosen"][0]["content"] == "latest dpo win"  # the latest win of the majority
    assert row["provenance"]["votes_for"] == 2 and row["provenance"]["votes_against"] == 1
    assert row["provenance"]["battle_ids"] == [b.id for b in majority]
    assert result.summary["dropped"]["merged_duplicate"] == 2 and result.summary["dropped"]["contested"] == 2


def test_lint_rates():
    battles = [voted("dpo@1", "base", "A", prompt="a", text_a="long long answer", text_b="short"),
               voted("dpo@1", "base", "A", prompt="b", text_a="x", text_b="longer one"),
               voted("dpo@1", "base", "B", prompt="c"), voted("dpo@1", "base", "tie", prompt="d")]
    summary = export_pairs(battles).summary
    assert summary["left_side_win_rate"] == pytest.approx(2 / 3, abs=1e-4)
    # chosen texts: "long long answer" > "short" yes; "x" < "longer one" no; "AMAZING loft!!!"(15) < 25 no.
    assert summary["chosen_longer_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert "position bias" in format_summary(summary)


def test_written_file_passes_the_training_validator(tmp_path):
    from training.validate import validate_file

    result = export_pairs([voted("dpo@1", "base", "A", prompt=f"p{i}") for i in range(3)])
    summary = write_export(result, tmp_path / "pairs.jsonl")
    report = validate_file(tmp_path / "pairs.jsonl", kind="dpo")
    assert report.ok and report.kept == 3 and report.format == "conversational"
    assert summary["sha256"] == hashlib.sha256((tmp_path / "pairs.jsonl").read_bytes()).hexdigest()
    lint = json.loads((tmp_path / "pairs.jsonl.lint.json").read_text())
    assert lint["rows"] == 3 and lint["sha256"] == summary["sha256"]


def test_cli_export_reads_the_store(tmp_path, capsys):
    from core.cli import main

    url = f"sqlite:///{tmp_path / 'votes.db'}"
    store = VoteStore(url)
    for battle in (voted("dpo@1", "base", "A", prompt="one"), voted("sft@1", "base", "tie", prompt="two")):
        vote = battle.vote
        battle.vote = None
        store.create_battle(battle)
        for side in battle.sides.values():
            store.finish_side(battle.id, side)
        store.record_vote(battle.id, vote.winner)
    out = tmp_path / "out" / "pairs.jsonl"
    assert main(["votes", "export", "--out", str(out), "--database-url", url]) == 0
    printed = capsys.readouterr().out
    assert "1 DPO pairs from 2 voted battles" in printed and "tie 1" in printed
    assert len(out.read_text().splitlines()) == 1

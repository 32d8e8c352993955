"""Agreement with people: hand-worked reward margins and Wilson intervals; excluded votes change nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest

from core.votes import BattleRecord, SideRecord, VoteRecord
from eval.agreement import compute_agreement, vote_pairs

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
# Summed log-probs of each answer under each model (the fake scorer puts them on the first token).
LOGP = {
    "dpo@1": {"good1": -10, "bad1": -12, "plain2": -20, "hype2": -18, "ok3": -5, "meh3": -9},
    "sft@1": {"good1": -11, "bad1": -11, "plain2": -20, "hype2": -19, "ok3": -6, "meh3": -7},
    "base": {"good1": -11, "bad1": -10, "plain2": -20, "hype2": -20, "ok3": -6, "meh3": -6},
}
for table in LOGP.values():  # answers of excluded votes: dpo would disagree with every one of them strongly
    table.update({"win_x": -50.0 if table is LOGP["dpo@1"] else -10.0, "lose_x": -1.0})


class FakeTokenizer:
    """One token per character of 'role:content|' per message, so prompts are prefixes of prompt+answer."""

    def apply_chat_template(self, messages, tokenize=True, return_dict=True, add_generation_prompt=False):  # noqa: ANN001
        text = "".join(f"{m['role']}:{m['content']}|" for m in messages)
        return {"input_ids": [ord(c) for c in text]}


class FakeScorer:
    name = "fake"

    def tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    async def load_adapter(self, handle) -> None:  # noqa: ANN001
        pass

    async def score(self, prompt_ids, completion_ids, adapter):  # noqa: ANN001
        text = "".join(chr(i) for i in completion_ids).removeprefix("assistant:").removesuffix("|")
        ref = adapter.ref if adapter is not None else "base"
        return [float(LOGP[ref][text])] + [0.0] * (len(completion_ids) - 1)


class FakeRegistry:
    versions = {"dpo": ("dpo@1", "dpo", "sft@1", {"config": {"trl": {"beta": 0.5}}}),
                "dpo@1": ("dpo@1", "dpo", "sft@1", {"config": {"trl": {"beta": 0.5}}}),
                "sft@1": ("sft@1", "sft", None, {})}

    def resolve(self, label: str):  # noqa: ANN201
        ref, kind, parent, meta = self.versions[label]
        return SimpleNamespace(ref=ref, kind=kind, parent=parent, path=f"adapters/{ref}", meta={**meta, "kind": kind,
                                                                                             "parent": parent})


def battle(bid: str, a: str, b: str, winner: str, reasons=(), ui_version="arena-ui/2", flags_a=(),
           finish_a="stop") -> BattleRecord:
    sides = {"A": SideRecord("A", "dpo@1", response=a, finish_reason=finish_a, flags=list(flags_a)),
             "B": SideRecord("B", "base", response=b, finish_reason="stop")}
    return BattleRecord(bid, NOW, f"prompt {bid}", None, "h" + bid, "base", {}, 0, sides, ui_version=ui_version,
                        vote=VoteRecord(winner, NOW, ui_version=ui_version, reasons=list(reasons)))


PEOPLE = [battle("b1", "good1", "bad1", "A", ["grounded"]), battle("b2", "hype2", "plain2", "B", ["hype"]),
          battle("b3", "ok3", "meh3", "A")]
EXCLUDED = [battle("s4", "win_x", "lose_x", "A", ui_version="palate-loop"),
            battle("l5", "win_x", "lose_x", "A", flags_a=["identity_leak"]),
            battle("t6", "win_x", "lose_x", "tie"), battle("x7", "win_x", "lose_x", "both_bad"),
            battle("e8", "win_x", "lose_x", "A", finish_a="error")]
# Hand-worked, beta 0.5, m = beta * [(dpo - ref)(winner) - (dpo - ref)(loser)]:
#   dpo@1 vs sft@1: b1 0.5*((-10+11) - (-12+11)) = 1.0; b2 0.5*((-20+20) - (-18+19)) = -0.5; b3 0.5*(1 + 2) = 1.5
#   sft@1 vs base:  b1 0.5*((0) - (-1)) = 0.5;         b2 0.5*((0) - (1)) = -0.5;            b3 0.5*(0 + 1) = 0.5
# 2 of 3 agree for both. Wilson 95% for 2/3: z^2 = 3.8415, centre (2/3 + 0.6402) / 2.2805 = 0.5731,
# half-width 1.96 / 2.2805 * sqrt(0.2222/3 + 3.8415/36) = 0.3654 -> [0.2077, 0.9385].


def run(battles):
    return asyncio.run(compute_agreement(FakeScorer(), FakeRegistry(), "dpo", battles, ["palate-loop"]))


def test_agreement_by_hand():
    result = run(PEOPLE)
    dpo, sft = result["versions"]
    assert (dpo["ref"], dpo["reference"], sft["ref"], sft["reference"]) == ("dpo@1", "sft@1", "sft@1", "base")
    assert dpo["margins"] == pytest.approx({"b1": 1.0, "b2": -0.5, "b3": 1.5})
    assert sft["margins"] == pytest.approx({"b1": 0.5, "b2": -0.5, "b3": 0.5})
    for version in (dpo, sft):
        overall = version["overall"]
        assert (overall["n"], overall["agree"]) == (3, 2)
        assert overall["wilson95"] == pytest.approx([0.2077, 0.9385], abs=1e-3)
        by = version["by_reason"]
        assert {t: (r["n"], r["agree"]) for t, r in by.items()} == {"grounded": (1, 1), "hype": (1, 0),
                                                                     "untagged": (1, 1)}
        # Wilson 95% for 1/1: centre (1 + 1.9207) / 4.8415 = 0.6033, half 0.4048*sqrt(0 + 0.9604) = 0.3967
        assert by["grounded"]["wilson95"] == pytest.approx([0.2065, 1.0], abs=1e-3)


def test_excluded_votes_change_nothing():
    with_excluded = run(PEOPLE + EXCLUDED)
    alone = run(PEOPLE)
    assert with_excluded["excluded"] == {"simulated": 1, "identity_leak": 1, "tie": 1, "both_bad": 1, "error": 1}
    assert with_excluded["versions"] == alone["versions"]


def test_vote_pairs_chosen_is_the_shown_winner():
    rows, tags, _ = vote_pairs(PEOPLE, [])
    assert [(r.pair_id, r.chosen[0]["content"], r.rejected[0]["content"]) for r in rows] == [
        ("b1", "good1", "bad1"), ("b2", "plain2", "hype2"), ("b3", "ok3", "meh3")]
    assert tags == {"b1": ["grounded"], "b2": ["hype"], "b3": ["untagged"]}


def test_agreement_table_and_report_section(tmp_path):
    import json

    from eval.agreement import agreement_table
    from eval.report import write_report

    result = run(PEOPLE + EXCLUDED)
    table = agreement_table(result)
    assert "| dpo@1 | sft@1 | 0.67 [0.21, 0.94] (n=3) | 1.00 [0.21, 1.00] (n=1) | 0.00 [0.00, 0.79] (n=1) |" in table
    path = tmp_path / "agreement.json"
    path.write_text(json.dumps(result))
    report = write_report(tmp_path / "r", margins=None, generations=None, agreement=path).read_text()
    assert "## Agreement with people" in report and table in report


def test_simulated_votes_are_scored_apart_and_never_mixed():
    result = asyncio.run(compute_agreement(FakeScorer(), FakeRegistry(), "dpo", PEOPLE + EXCLUDED, ["palate-loop"],
                                           source="simulated"))
    # only s4 (a palate-loop vote) counts: 0.5 * ((-50 + 10) - (-1 + 1)) = -20, a disagreement
    assert result["source"] == "simulated" and result["votes"] == 1
    assert result["excluded"] == {"people": 7}
    assert result["versions"][0]["margins"] == pytest.approx({"s4": -20.0})
    with pytest.raises(ValueError, match="people, simulated"):
        vote_pairs(PEOPLE, [], source="everyone")

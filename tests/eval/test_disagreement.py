"""`--order disagreement`: the pair the DPO version prefers the loser of most strongly comes first."""

from __future__ import annotations

import asyncio

import pytest

from core.vote_export import export_pairs
from eval.disagreement import order_by_disagreement
from tests.eval.test_agreement import LOGP, FakeRegistry, FakeScorer, battle

# Exported rows in vote order b1, b2, b3; hand-worked margins of dpo@1 vs sft@1 with beta 0.5 (test_agreement):
# b1 +1.0, b2 -0.5 (dpo prefers the hype answer people rejected), b3 +1.5; plus b9 where dpo@1 strongly prefers
# the loser: 0.5 * ((-30 + 20) - (-4 + 6)) = -6.0, the hand-picked strongest disagreement.
LOGP["dpo@1"].update({"right9": -30, "wrong9": -4})
LOGP["sft@1"].update({"right9": -20, "wrong9": -6})


def test_strongest_disagreement_first_and_margin_in_provenance():
    battles = [battle("b1", "good1", "bad1", "A"), battle("b2", "hype2", "plain2", "B"),
               battle("b3", "ok3", "meh3", "A"), battle("b9", "right9", "wrong9", "A")]
    rows = export_pairs(battles).rows
    assert [r["provenance"]["battle_id"] for r in rows] == ["b1", "b2", "b3", "b9"]
    ordered = asyncio.run(order_by_disagreement(FakeScorer(), FakeRegistry(), "dpo", rows))
    assert [r["provenance"]["battle_id"] for r in ordered] == ["b9", "b2", "b1", "b3"]
    first = ordered[0]["provenance"]["disagreement"]
    assert first == {"model": "dpo@1", "reference": "sft@1", "beta": 0.5, "reward_margin": pytest.approx(-6.0)}
    assert [r["provenance"]["disagreement"]["reward_margin"] for r in ordered] == pytest.approx([-6.0, -0.5, 1.0, 1.5])
    assert ordered[0]["chosen"] == rows[3]["chosen"]  # rows move whole

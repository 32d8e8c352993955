"""Rank(UB), the length-controlled rating, the change against a parent, and which votes are rated: checked
against values worked out by hand on small vote tables."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from core.votes import BattleRecord, SideRecord, VoteRecord
from core.leaderboard import build_leaderboard, rank_upper_bound
from core.ratings import Outcome
from core.length_control import length_controlled_ratings, length_difference
from server.arena.views import rated_outcomes


def test_rank_ub_counts_only_intervals_entirely_above():
    # x [1050, 1150] is above z's upper bound 1000 -> z is rank 2; y [980, 1060] overlaps both x and z -> rank 1.
    ranks = rank_upper_bound({"x": (1050, 1150), "y": (980, 1060), "z": (900, 1000)})
    assert ranks == {"x": 1, "y": 1, "z": 2}


def test_length_controlled_rating_removes_a_pure_length_effect():
    # X vs Y, 6 votes. With X longer (20 vs 10 tokens, d = 1/3): X wins 3 of 4. Equal length (d = 0): 1 of 2.
    # The model has one strength gap and one length coefficient for two kinds of vote, so the MLE fits both rates
    # exactly: beta_X - beta_Y + gamma * 0 = logit(1/2) = 0 and gamma / 3 = logit(3/4) = ln 3 -> gamma = 3 ln 3.
    votes = ([Outcome("X", "Y", "A", 20, 10)] * 3 + [Outcome("X", "Y", "B", 20, 10)]
             + [Outcome("X", "Y", "A", 15, 15), Outcome("X", "Y", "B", 15, 15)])
    assert length_difference(20, 10) == pytest.approx(1 / 3)
    fit = length_controlled_ratings(votes, contestants=["X", "Y"])
    assert fit.length_coefficient == pytest.approx(3 * math.log(3), abs=1e-6)
    assert fit.ratings == pytest.approx({"X": 1000.0, "Y": 1000.0}, abs=1e-6)
    # The raw rating credits X with its 4 of 6 wins: 2:1 odds -> a gap of 400 log10 2 = 120.41.
    board = build_leaderboard(votes, pseudo_ties=0.0, rounds=100, contestants=["X", "Y"])
    raw = {s.contestant: s.rating for s in board.standings}
    assert raw["X"] - raw["Y"] == pytest.approx(400 * math.log10(2), abs=1e-4)
    lc = {s.contestant: s.rating_lc for s in board.standings}
    assert lc["X"] == pytest.approx(lc["Y"], abs=1e-6)
    assert board.length_coefficient == pytest.approx(3 * math.log(3), abs=1e-6)


def test_length_controlled_equals_raw_when_lengths_are_equal():
    # Equal lengths everywhere: d = 0, so the fit is plain Bradley-Terry: 3 wins to 1 -> gap 400 log10 3.
    votes = [Outcome("a", "b", "A", 10, 10)] * 3 + [Outcome("a", "b", "B", 10, 10)]
    fit = length_controlled_ratings(votes, contestants=["a", "b"])
    assert fit.ratings["a"] - fit.ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)


def test_rating_change_against_parent():
    # base vs sft@1: 3-1 -> sft@1 is 400 log10 3 = 190.85 above its parent, base; dpo@1 (parent sft@1) vs sft@1 1-1.
    votes = [Outcome("sft@1", "base", "A")] * 3 + [Outcome("sft@1", "base", "B")]
    board = build_leaderboard(votes, pseudo_ties=0.0, rounds=100, parents={"sft@1": "base", "dpo@1": "sft@1"})
    by_name = {s.contestant: s for s in board.standings}
    assert by_name["sft@1"].parent == "base"
    assert by_name["sft@1"].vs_parent == pytest.approx(400 * math.log10(3), abs=1e-4)
    assert by_name["base"].vs_parent is None  # no parent


T0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


def voted(a: str, b: str, winner: str, *, ui: str = "arena-ui/2", flags_a=(), finish_b="stop") -> BattleRecord:
    sides = {"A": SideRecord("A", a, response="one", finish_reason="stop", completion_tokens=5, finished_at=T0,
                             flags=list(flags_a)),
             "B": SideRecord("B", b, response="two", finish_reason=finish_b, completion_tokens=5, finished_at=T0,
                             flags=["truncated"] if finish_b == "length" else [])}
    return BattleRecord(id=f"{a}-{b}-{winner}-{ui}-{flags_a}-{finish_b}", created_at=T0, prompt="p", system=None,
                        prompt_sha256="x", base_model="m", sampling={}, seed=1, sides=sides, ui_version=ui,
                        vote=VoteRecord(winner, T0, None, ui))


def test_leaked_errored_truncated_and_simulated_votes_do_not_move_people_ratings():
    people = [voted("sft@1", "base", "A")] * 3 + [voted("sft@1", "base", "B")]
    noise = ([voted("sft@1", "base", "B", flags_a=["identity_leak"])] * 5
             + [voted("sft@1", "base", "B", flags_a=["error"])] * 4
             + [voted("sft@1", "base", "B", finish_b="length")] * 3
             + [voted("sft@1", "base", "B", ui="palate-loop")] * 7)
    clean, excluded, by_source = rated_outcomes(people, "people", ["palate-loop"])
    mixed, excluded_mixed, by_source_mixed = rated_outcomes(people + noise, "people", ["palate-loop"])
    assert mixed == clean and len(clean) == 4
    assert excluded_mixed == {"identity_leak": 5, "error": 4, "truncated": 3}
    assert by_source_mixed == {"people": 16, "simulated": 7}
    ratings = {s.contestant: s.rating for s in build_leaderboard(mixed, pseudo_ties=0.0, rounds=100).standings}
    assert ratings["sft@1"] - ratings["base"] == pytest.approx(400 * math.log10(3), abs=1e-4)
    simulated, _, _ = rated_outcomes(people + noise, "simulated", ["palate-loop"])
    assert len(simulated) == 7 and all(o.result == "B" for o in simulated)
    everything, _, _ = rated_outcomes(people + noise, "all", ["palate-loop"])
    assert len(everything) == 11

"""Bradley–Terry, bootstrap and Wilson math against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from core.leaderboard import build_leaderboard, win_rate_matrix
from core.ratings import Outcome, bootstrap_intervals, bradley_terry, wilson_interval


def games(a: str, b: str, a_wins: int, b_wins: int, ties: int = 0) -> list[Outcome]:
    return [Outcome(a, b, "A")] * a_wins + [Outcome(a, b, "B")] * b_wins + [Outcome(a, b, "tie")] * ties


def test_two_players_three_to_one():
    # MLE: p_a / p_b = 3 -> gap 400*log10(3) = 190.849; mean 1000 -> 1095.42 / 904.58.
    ratings = bradley_terry(games("a", "b", 3, 1))
    assert ratings["a"] == pytest.approx(1000 + 200 * math.log10(3), abs=1e-6)
    assert ratings["b"] == pytest.approx(1000 - 200 * math.log10(3), abs=1e-6)
    assert ratings["a"] - ratings["b"] == pytest.approx(190.849, abs=1e-3)


def test_ties_count_as_half_a_win():
    # a: 2 wins + 2 ties = 3 points, b: 0 wins + 2 ties = 1 point -> the same 3:1 as above.
    with_ties = bradley_terry(games("a", "b", 2, 0, ties=2))
    assert with_ties["a"] - with_ties["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    both_bad = bradley_terry(games("a", "b", 2, 0) + [Outcome("a", "b", "both_bad")] * 2)
    assert both_bad == pytest.approx(with_ties)


def test_three_players_exact_mle():
    # Strengths 4:2:1 reproduce these counts exactly (a-b 2:1, b-c 2:1, a-c 4:1), so they are the MLE:
    # W_a = 6 = 3*(2/3) + 5*(4/5); W_b = 3 = 3*(1/3) + 3*(2/3); W_c = 2 = 3*(1/3) + 5*(1/5).
    # Ratings 400*log10(4), 400*log10(2), 0 shifted to mean 1000: 1120.41, 1000, 879.59.
    outcomes = games("a", "b", 2, 1) + games("b", "c", 2, 1) + games("a", "c", 4, 1)
    ratings = bradley_terry(outcomes)
    assert ratings["a"] == pytest.approx(1000 + 400 * math.log10(2), abs=1e-6)
    assert ratings["b"] == pytest.approx(1000.0, abs=1e-6)
    assert ratings["c"] == pytest.approx(1000 - 400 * math.log10(2), abs=1e-6)
    assert ratings["a"] == pytest.approx(1120.412, abs=1e-3)


def test_order_of_sides_does_not_matter():
    flipped = [Outcome(o.b, o.a, {"A": "B", "B": "A"}.get(o.result, o.result)) for o in games("a", "b", 3, 1)]
    assert bradley_terry(flipped) == pytest.approx(bradley_terry(games("a", "b", 3, 1)))


def test_cycle_is_all_equal():
    outcomes = games("a", "b", 2, 1) + games("b", "c", 2, 1) + games("c", "a", 2, 1)
    assert all(r == pytest.approx(1000, abs=1e-6) for r in bradley_terry(outcomes).values())


def test_anchor_pins_one_contestant():
    ratings = bradley_terry(games("a", "b", 3, 1), anchor="b")
    assert ratings["b"] == pytest.approx(1000)
    assert ratings["a"] == pytest.approx(1000 + 400 * math.log10(3), abs=1e-6)


def test_pseudo_ties_keep_unbeaten_finite():
    # One pseudo tie per pair adds half a point each: a 3.5 vs b 1.5 from 3-1 -> gap 400*log10(7/3) = 147.19.
    ratings = bradley_terry(games("a", "b", 3, 1), pseudo_ties=1.0)
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(7 / 3), abs=1e-6)
    # Unbeaten 5-0 with a 0.5 prior: 5.25 vs 0.25 -> gap 400*log10(21) = 528.9, finite.
    unbeaten = bradley_terry(games("a", "b", 5, 0), pseudo_ties=0.5)
    assert unbeaten["a"] - unbeaten["b"] == pytest.approx(400 * math.log10(21), abs=1e-6)


def test_wilson_interval_known_values():
    # 8 of 10 at 95%: p=0.8, z^2/n = 0.38415; centre (0.8+0.19207)/1.38415 = 0.71674;
    # half = 1.96/1.38415 * sqrt(0.016 + 0.0096) = 0.22658 -> (0.4902, 0.9433).
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    # 0 of 5 -> (0, z^2/(n+z^2)) = (0, 3.8415/8.8415 = 0.4345).
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.43449), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_win_rate_matrix_counts_ties_half():
    matrix = win_rate_matrix(games("a", "b", 2, 1, ties=1), ["a", "b"])
    assert matrix[0][1].games == 4 and matrix[0][1].win_rate == pytest.approx(2.5 / 4)
    assert matrix[1][0].win_rate == pytest.approx(1.5 / 4)
    assert matrix[0][0].win_rate is None
    assert (matrix[0][1].ci_low, matrix[0][1].ci_high) == pytest.approx(wilson_interval(2.5, 4))


def test_bootstrap_needs_100_rounds_and_is_deterministic():
    outcomes = games("a", "b", 30, 10) + games("b", "c", 20, 20) + games("a", "c", 25, 15)
    with pytest.raises(ValueError, match="at least 100"):
        bootstrap_intervals(outcomes, rounds=50)
    first = bootstrap_intervals(outcomes, rounds=100, seed=3)
    assert first == bootstrap_intervals(outcomes, rounds=100, seed=3)
    ratings = bradley_terry(outcomes, pseudo_ties=0.5)
    for name, (lo, hi) in first.items():
        assert lo < ratings[name] < hi
    assert first["a"][0] > first["c"][0]


def test_leaderboard_rows_provisional_and_order():
    outcomes = games("dpo@1", "base", 12, 3) + games("sft@1", "base", 2, 1)
    board = build_leaderboard(outcomes, min_votes=10, rounds=100, contestants=["dpo@2"])
    names = [s.contestant for s in board.standings]
    assert names[0] == "dpo@1" and board.contestants == names
    by = {s.contestant: s for s in board.standings}
    assert by["dpo@1"].votes == 15 and (by["dpo@1"].wins, by["dpo@1"].losses) == (12, 3)
    assert not by["dpo@1"].provisional and by["sft@1"].provisional and by["dpo@2"].votes == 0
    assert board.total_votes == 18 and board.bootstrap_rounds == 100
    assert all(s.ci_low <= s.rating <= s.ci_high for s in board.standings)
    assert [s.rank for s in board.standings] == [1, 2, 3, 4]


def test_same_contestant_battles_are_ignored():
    board = build_leaderboard([Outcome("a", "a", "A")] + games("a", "b", 1, 1), rounds=100)
    assert board.total_votes == 2

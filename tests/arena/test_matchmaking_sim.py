"""The matchmaking simulation's own rules: the separation criterion and the floor it reports (tiny runs)."""

from __future__ import annotations

import numpy as np

from benchmarks.matchmaking import separated, simulate


def tallies(wins_01: float, games_01: float) -> tuple[np.ndarray, np.ndarray]:
    wins, games = np.zeros((2, 2)), np.zeros((2, 2))
    wins[0, 1], wins[1, 0] = wins_01, games_01 - wins_01
    games[0, 1] = games[1, 0] = games_01
    return wins, games


def test_separation_criterion():
    # 70 of 100: diff = ln(70.25/30.25) = 0.843 nats, sd = 1/sqrt(100.5 * 0.699 * 0.301) = 0.217 -> z = 3.9
    assert separated(*tallies(70, 100))
    # 55 of 100: diff 0.20, sd 0.20 -> z = 1.0, not separated; and the wrong direction never counts
    assert not separated(*tallies(55, 100))
    assert not separated(*tallies(30, 100))


def test_simulation_runs_and_keeps_the_floor():
    votes, share, done = simulate([1.5, 0.0, -1.0], "active", seed=0, floor=0.6, budget=400)
    assert done and votes <= 400 and votes % 5 == 0
    assert share >= 0.6 / 3 - 1 / votes
    votes_lp, share_lp, done_lp = simulate([1.5, 0.0, -1.0], "least_played", seed=0, floor=0.6, budget=400)
    assert done_lp and share_lp >= 1 / 3 - 1 / votes_lp

"""Active matchmaking policy: Fisher-information covariance, pair scores, exploration floor, config key."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from server.arena.active_matchmaking import choose_pair_active, fit_skills, pair_scores


def test_two_contestants_even_record_variance_by_hand():
    # 10 votes each way plus 1 pseudo-tie: skills equal, p = 1/2, information of the difference is
    # n p (1-p) = 21 * 1/4, so var(t_a - t_b) = 4 / 21.
    votes = [("a", "b", "A")] * 10 + [("a", "b", "B")] * 10
    skills, cov = fit_skills(["a", "b"], votes, pseudo_ties=1.0)
    assert skills[0] == pytest.approx(0.0, abs=1e-9) and skills[1] == pytest.approx(0.0, abs=1e-9)
    assert cov[0, 0] + cov[1, 1] - 2 * cov[0, 1] == pytest.approx(4 / 21)


def test_two_contestants_three_to_one_skill_by_hand():
    # 15 wins, 5 losses, no prior: MLE p = 3/4, t_a - t_b = ln 3; var = 1 / (20 * 3/4 * 1/4) = 4/15.
    votes = [("a", "b", "A")] * 15 + [("b", "a", "B")] * 0 + [("a", "b", "B")] * 5
    skills, cov = fit_skills(["a", "b"], votes, pseudo_ties=0.0)
    assert skills[0] - skills[1] == pytest.approx(math.log(3), abs=1e-6)
    assert cov[0, 0] + cov[1, 1] - 2 * cov[0, 1] == pytest.approx(4 / 15, rel=1e-5)
    scores = pair_scores(["b", "a"], votes, pseudo_ties=0.0)
    # One more battle adds w = 3/4 * 1/4 = 3/16 to the information: var' = var / (1 + w var), so it removes the
    # fraction w var / (1 + w var) = (3/16 * 4/15) / (1 + 3/16 * 4/15) = 1/21 of the one question's variance.
    z2 = math.log(3) ** 2 / (4 / 15)
    assert scores[("a", "b")] == pytest.approx(math.exp(-z2 / 2) / 21, rel=1e-5)


def test_three_contestants_gain_by_hand():
    """The information and its pseudo-inverse for a 3-model tally, worked out by hand, against gains_from_fit."""
    from server.arena.active_matchmaking import gains_from_fit

    # Skills 0 (all equal) and information n p (1-p) = 4 * 1/4 = 1 per pair: I = [[2,-1,-1],[-1,2,-1],[-1,-1,2]],
    # whose pseudo-inverse is I / 9 * 3 ... = (1/3) (identity - 1/3): var(t_a - t_b) = 2/3 for every pair.
    skills = np.zeros(3)
    cov = (np.eye(3) - 1 / 3) / 3
    gains = gains_from_fit(skills, cov, rank_weight=0.5)
    # A battle on (0,1): w = 1/4, e01^T S e01 = 2/3, so it removes w (2/3)^2 / (1 + w 2/3) = (1/9) / (7/6) = 2/21
    # of var(t0 - t1) (fraction 1/7) and w (1/3)^2 / (7/6) = 1/42 of var(t0 - t2) and var(t1 - t2) (fraction
    # 1/28 each; e02^T S e01 = 1/3). Ranks with equal skills: 0, 1, 2 (stable) -> weights 1 (0,1), 1 (0,2), 1/2 (1,2).
    assert gains[0, 1] == pytest.approx(1 / 7 + 1 / 28 + 0.5 / 28)
    # A battle on (1,2) removes 1/7 of (1,2)'s variance (weight 1/2) and 1/28 of the other two (weight 1 each).
    assert gains[1, 2] == pytest.approx(0.5 / 7 + 2 / 28)
    assert gains[0, 1] > gains[1, 2]  # equal uncertainty everywhere: the top of the ranking first


def test_close_unsettled_pair_beats_settled_one():
    votes = ([("x", "y", "A")] * 30 + [("x", "y", "B")] * 1      # x >> y: settled
             + [("y", "z", "A")] * 15 + [("y", "z", "B")] * 15   # y ~ z: a coin flip
             + [("x", "z", "A")] * 30 + [("x", "z", "B")] * 1)
    load = {frozenset(p): 31 if "x" in p else 30 for p in [("x", "y"), ("y", "z"), ("x", "z")]}
    rng = random.Random(0)
    for _ in range(20):
        assert set(choose_pair_active(["x", "y", "z"], load, votes, rng)) == {"y", "z"}


def test_floor_plays_a_starving_pair_first():
    votes = [("x", "y", "A"), ("x", "y", "B")] * 10 + [("x", "z", "A")] * 10 + [("y", "z", "A")] * 2
    load = {frozenset(("x", "y")): 20, frozenset(("x", "z")): 10, frozenset(("y", "z")): 2}
    # 32 battles, 3 pairs, floor 0.25: threshold 0.25 * 33 / 3 = 2.75, so y-z (2) is starving.
    assert set(choose_pair_active(["x", "y", "z"], load, votes, random.Random(0), floor=0.25)) == {"y", "z"}
    # Above the floor (threshold 0.92 with floor 1/12) the policy plays the open question at the top: x vs y, a coin
    # flip between the two best.
    assert set(choose_pair_active(["x", "y", "z"], load, votes, random.Random(0), floor=1 / 12)) == {"x", "y"}


def test_the_top_of_the_ranking_comes_first():
    """A coin flip between the two best beats an equally open coin flip further down (rank weight)."""
    votes = [("a", "b", "A"), ("a", "b", "B")] * 10 + [("c", "d", "A"), ("c", "d", "B")] * 10 \
        + [("a", "c", "A")] * 12 + [("b", "d", "A")] * 12
    load = {frozenset(p): 20 if p in (("a", "b"), ("c", "d")) else 12 for p in [("a", "b"), ("c", "d"), ("a", "c"),
                                                                                   ("b", "d")]}
    load.update({frozenset(("a", "d")): 12, frozenset(("b", "c")): 12})
    scores = pair_scores(["a", "b", "c", "d"], votes)
    assert scores[("a", "b")] > scores[("c", "d")]
    assert set(choose_pair_active(["a", "b", "c", "d"], load, votes, random.Random(0), floor=0.1)) == {"a", "b"}


def test_every_pair_keeps_its_floor_share_and_sides_are_random():
    rng = random.Random(3)
    names = ["a", "b", "c", "d"]
    load: Counter = Counter()
    votes = []
    left = Counter()
    for _ in range(600):
        side_a, side_b = choose_pair_active(names, load, votes, rng, floor=0.3)
        load[frozenset((side_a, side_b))] += 1
        left[side_a] += 1
        votes.append((side_a, side_b, "A" if min(side_a, side_b) == side_a else "B"))  # alphabetical always wins
    share = min(load.values()) / sum(load.values())
    assert share >= 0.3 / 6 - 1 / 600
    assert len(load) == 6
    assert all(v > 60 for v in left.values())  # every contestant lands on side A often


def test_needs_two_contestants_and_a_fraction():
    with pytest.raises(ValueError):
        choose_pair_active(["a", "a"], {}, [], random.Random(0))
    with pytest.raises(ValueError):
        choose_pair_active(["a", "b"], {}, [], random.Random(0), floor=1.5)


def test_matchmaking_config_key(tmp_path):
    from core.arena_config import load_arena_config
    from core.config import ConfigError

    path = tmp_path / "arena.yaml"
    path.write_text("matchmaking: active\nactive_floor: 0.5\n")
    config = load_arena_config(path)
    assert (config.matchmaking, config.active_floor) == ("active", 0.5)
    path.write_text("matchmaking: smartest\n")
    with pytest.raises(ConfigError, match="key 'matchmaking'"):
        load_arena_config(path)

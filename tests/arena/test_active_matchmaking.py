"""Active matchmaking policy: Fisher-information covariance, pair scores, exploration floor, config key."""

from __future__ import annotations

import math
import random
from collections import Counter

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
    z2 = math.log(3) ** 2 / (4 / 15)
    assert scores[("a", "b")] == pytest.approx(3 / 16 * math.exp(-z2 / 2), rel=1e-5)


def test_close_unsettled_pair_beats_settled_one():
    votes = ([("x", "y", "A")] * 30 + [("x", "y", "B")] * 1      # x >> y: settled
             + [("y", "z", "A")] * 15 + [("y", "z", "B")] * 15   # y ~ z: a coin flip
             + [("x", "z", "A")] * 30 + [("x", "z", "B")] * 1)
    load = {frozenset(p): 31 if "x" in p else 30 for p in [("x", "y"), ("y", "z"), ("x", "z")]}
    rng = random.Random(0)
    for _ in range(20):
        assert set(choose_pair_active(["x", "y", "z"], load, votes, rng)) == {"y", "z"}


def test_floor_plays_a_starving_pair_first():
    votes = [("y", "z", "A"), ("y", "z", "B")] * 20 + [("x", "y", "A")] * 10 + [("x", "z", "A")] * 3
    load = {frozenset(("y", "z")): 40, frozenset(("x", "y")): 10, frozenset(("x", "z")): 3}
    # 53 battles, 3 pairs, floor 0.25: threshold 0.25 * 54 / 3 = 4.5, so x-z (3) is starving.
    assert set(choose_pair_active(["x", "y", "z"], load, votes, random.Random(0), floor=0.25)) == {"x", "z"}
    # Above the floor (threshold 1.5 with floor 1/12) the policy plays the coin-flip pair again.
    assert set(choose_pair_active(["x", "y", "z"], load, votes, random.Random(0), floor=1 / 12)) == {"y", "z"}


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

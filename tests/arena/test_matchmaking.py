"""Pair choice, side assignment and answer flags (pure rules)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from server.arena.matchmaking import choose_pair, contains_identity, identity_terms, side_flags


def test_least_voted_pair_is_chosen():
    load = {frozenset(("base", "sft@1")): 5, frozenset(("base", "dpo@1")): 5, frozenset(("dpo@1", "sft@1")): 1}
    rng = random.Random(0)
    for _ in range(50):
        assert set(choose_pair(["base", "sft@1", "dpo@1"], load, rng)) == {"dpo@1", "sft@1"}


def test_ties_in_load_spread_and_sides_are_random():
    rng = random.Random(1)
    picks = Counter(choose_pair(["base", "sft@1", "dpo@1"], {}, rng) for _ in range(3000))
    assert len(picks) == 6  # every pair, in both orders
    assert min(picks.values()) > 380  # ~500 each
    left = Counter(pair[0] for pair in picks.elements())
    assert all(900 < count < 1100 for count in left.values())


def test_needs_two_distinct_contestants():
    with pytest.raises(ValueError):
        choose_pair(["base", "base"], {}, random.Random(0))


def test_identity_terms_and_matching():
    terms = identity_terms("sft@1", "sft", "abcdef0123456789ff", extra=["listing tuner"])
    assert terms == sorted(["sft@1", "sft", "abcdef012345", "listing tuner"])
    assert contains_identity("As the SFT model I think", terms)
    assert contains_identity("hash abcdef012345 here", terms)
    assert not contains_identity("A softer, brighter condo", terms)
    assert identity_terms("base", None, None, ["base model"]) == ["base model"]


def test_side_flags():
    assert side_flags("fine text", "stop", ["sft"]) == []
    assert side_flags("cut off", "length", []) == ["truncated"]
    assert side_flags("", "error", []) == ["error"]
    assert side_flags("  ", "stop", []) == ["empty"]
    assert side_flags("I am sft here", "stop", ["sft"]) == ["identity_leak"]

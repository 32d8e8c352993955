"""`palate loop` counts a simulated vote as usable exactly when the export would keep it (core.vote_export's rules)."""

from __future__ import annotations

from eval.loop import as_battle, usable, usable_pairs


def record(choice="A", finish=("stop", "stop"), flags=(), a="Bright 2-bed condo.", b="Stunning home!",
           prompt="Describe: condo, 2 beds") -> dict:
    reveal = {"contestants": {"A": {"model": "dpo@1"}, "B": {"model": "base"}}, "flags": list(flags)}
    return {"battle_id": "b1", "choice": choice, "A": a, "B": b, "finish": dict(zip("AB", finish)), "reveal": reveal,
            "key": (prompt, "base", "dpo@1")}


def test_usable_follows_the_export_drop_rules():
    assert usable(record())
    assert not usable(record(choice="tie"))
    assert not usable(record(finish=("stop", "length")))  # truncated
    assert not usable(record(flags=["identity_leak:B"]))
    assert not usable(record(b="Bright 2-bed  condo."))  # identical once whitespace is normalised
    battle = as_battle(record(flags=["identity_leak:B"]))
    assert battle.sides["B"].flags == ["identity_leak"] and battle.sides["A"].contestant == "dpo@1"


def test_repeats_of_one_prompt_and_pair_count_once():
    assert usable_pairs([record(), record(), record(prompt="other"), record(choice="tie", prompt="third")]) == 2

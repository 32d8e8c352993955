"""Pairwise win rates, the both-orders rule for LLM judges, and judge-reply parsing."""

import asyncio

import pytest

from core.ratings import Outcome
from eval.pairwise import combine_orders, listing_judge_outcomes, llm_judge_outcomes, parse_judge_reply, win_rates


def test_parse_judge_reply():
    assert parse_judge_reply("A") == "A"
    assert parse_judge_reply(" b. Because it is factual") == "B"
    assert parse_judge_reply("Tie") == "tie"
    assert parse_judge_reply("Both are fine") is None


@pytest.mark.parametrize("first, swapped, expected", [
    ("A", "B", "A"),  # a first, then a second: both pick a
    ("B", "A", "B"),  # both pick b
    ("A", "A", "tie"),  # position bias: always the first slot -> disagreement -> tie
    ("B", "B", "tie"),
    ("A", "tie", "tie"),
    ("tie", "tie", "tie"),
    (None, "B", "tie"),
])
def test_combine_orders(first, swapped, expected):
    assert combine_orders(first, swapped) == expected


def test_win_rates_count_ties_half_with_wilson_interval():
    outcomes = [Outcome("dpo", "base", "A")] * 6 + [Outcome("base", "dpo", "A")] * 2 + [Outcome("dpo", "base", "tie")] * 2
    (row,) = win_rates(outcomes, ["dpo", "base"])
    assert (row["games"], row["wins"], row["losses"], row["ties"]) == (10, 6, 2, 2)
    assert row["win_rate"] == pytest.approx(0.7)
    # Wilson 95% for 7/10: centre (0.7 + 1.92/10)/(1 + 3.84/10) = 0.6446..., half-width 0.2629...
    assert row["ci_low"] == pytest.approx(0.3968, abs=1e-3) and row["ci_high"] == pytest.approx(0.8922, abs=1e-3)
    (reverse,) = win_rates(outcomes, ["base", "dpo"])
    assert reverse["win_rate"] == pytest.approx(0.3)


def test_listing_judge_outcomes_from_verdicts():
    items = [{"verdicts": {"base": {"score": 0.2}, "dpo": {"score": 0.9}, "sft": {"score": 0.9}}},
             {"verdicts": {}}]
    outcomes = listing_judge_outcomes(items, ["base", "sft", "dpo"])
    assert outcomes == [Outcome("base", "sft", "B"), Outcome("base", "dpo", "B"), Outcome("sft", "dpo", "tie")]


def test_llm_judge_both_orders_and_position_bias():
    items = [{"listing": {"id": "x"}, "answers": {"base": "HYPE!!!", "dpo": "A 2-bed condo."}}] * 3

    async def fair(prompt):  # prefers the factual answer wherever it sits
        a_text = prompt.split("Description A:\n")[1].split("\n\nDescription B:")[0]
        return "A" if "HYPE" not in a_text else "B"

    async def biased(prompt):  # always the first slot
        return "A"

    outcomes, stats = asyncio.run(llm_judge_outcomes(items, ["base", "dpo"], fair))
    assert [o.result for o in outcomes] == ["B"] * 3 and stats["order_disagreements"] == 0
    outcomes, stats = asyncio.run(llm_judge_outcomes(items, ["base", "dpo"], biased))
    assert [o.result for o in outcomes] == ["tie"] * 3 and stats["order_disagreements"] == 3
    assert stats["judged_pairs"] == 3


def test_loop_counts_only_votes_the_export_keeps():
    from eval.loop import usable, usable_pairs

    done = {"A": "stop", "B": "stop"}
    answers = {"battle_id": "b", "A": "A 2-bed condo.", "B": "A lovely home!"}  # the loop records both answers
    records = [{**answers, **r} for r in [
        {"choice": "A", "finish": done, "key": ("p1", "base", "sft@1")},
        {"choice": "B", "finish": done, "key": ("p1", "base", "sft@1")},  # same prompt and pair: merged in export
        {"choice": "tie", "finish": done, "key": ("p2", "base", "sft@1")},  # ties are dropped
        {"choice": "A", "finish": {"A": "stop", "B": "length"}, "key": ("p3", "base", "dpo@1")},  # truncated
        {"choice": "B", "finish": done, "key": ("p3", "base", "dpo@1")},
    ]]
    assert [usable(r) for r in records] == [True, True, False, False, True]
    assert usable_pairs(records) == 2

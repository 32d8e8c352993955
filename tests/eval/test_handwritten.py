"""The hand-written evaluation prompts (eval/data/prompts_handwritten.jsonl): written by a person, not by the dataset
generator, in the ways people type. Their facts must be right, or the judge scores answers against the wrong ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

from eval.generate import read_prompts
from eval.judge import judge_listing
from training.describe import fmt_baths, write_grounded
from training.listings import Listing, stated_facts

PATH = Path(__file__).resolve().parents[2] / "eval" / "data" / "prompts_handwritten.jsonl"


def test_every_stated_fact_is_in_its_prompt_and_a_grounded_answer_scores_full_marks():
    rows = [json.loads(line) for line in PATH.read_text().splitlines() if line.strip()]
    assert len(read_prompts(PATH)) == len(rows) >= 48
    assert len({row["listing"]["id"] for row in rows}) == len(rows)
    assert {row["family"] for row in rows} == {"handwritten"}
    for row in rows:
        prompt, facts = row["messages"][0]["content"].lower(), stated_facts(row["listing"])
        whole = ("beds", "transit_minutes", "monthly_fee", "year_built")
        numbers = [fmt_baths(facts["baths"])] + [str(facts[key]) for key in whole if facts.get(key)]
        if facts.get("area_sqft"):
            area = facts["area_sqft"]
            numbers.append(f"{area:,}" if f"{area:,}" in prompt else str(area))
        for value in [n for n in numbers if n != "0"] + [f.lower() for f in facts["features"]]:
            assert value in prompt, (row["listing"]["id"], value)
        verdict = judge_listing(write_grounded(Listing.from_facts(row["listing"]), random.Random(0)), row["listing"])
        assert verdict.coverage == 1.0 and not verdict.invented and not verdict.hype_terms, (row["listing"]["id"],
                                                                                              verdict)

"""The listing judge on hand-written descriptions of one hand-written listing."""

import pytest

from eval.judge import JudgeConfig, judge_listing, prefer, repetition

FACTS = {
    "id": "T-1", "property_type": "condo", "beds": 2, "baths": 1.5, "area_sqft": 940, "neighbourhood": "Elm Hill",
    "transit": "a 4-minute walk to the 52 express bus", "transit_minutes": 4,
    "features": ["in-unit laundry", "covered parking spot", "heat pump"], "monthly_fee": 805, "year_built": 2010,
    "condition": "freshly refinished",
}

GROUNDED = ("Freshly refinished 2-bed, 1.5-bath condo in Elm Hill, 940 sq ft, built in 2010. In-unit laundry, a heat "
            "pump and a covered parking spot. A 4-minute walk to the 52 express bus; monthly fee $805.")


def test_grounded_description_covers_everything_and_invents_nothing():
    verdict = judge_listing(GROUNDED, FACTS)
    # 10 scalar facts (fee included) + 3 features
    assert verdict.missing == ()
    assert len(verdict.covered) == 13 and verdict.coverage == 1.0
    assert verdict.invented == ()
    assert not verdict.has_hype and not verdict.has_invented
    assert verdict.length_ok
    assert verdict.score == pytest.approx(1.0)


def test_hype_and_exclamations_are_counted():
    text = GROUNDED + " A STUNNING, once-in-a-lifetime dream home!!"
    verdict = judge_listing(text, FACTS)
    assert sorted(verdict.hype_terms) == ["dream home", "once-in-a-lifetime", "stunning"]
    assert verdict.exclamations == 2 and verdict.has_hype
    assert verdict.score == pytest.approx(1.0 - 0.1 * 5)


def test_urgency_is_hype_even_without_an_exclamation_mark():
    """Pressure on the reader is hype too: dpo's rewrite of a hand-written ad ended "Built in 1965; act fast"."""
    for phrase in ("Act fast.", "Don't miss it.", "Book your showing now.", "Hurry, it will go quickly."):
        verdict = judge_listing(f"{GROUNDED} {phrase}", FACTS)
        assert verdict.has_hype and verdict.exclamations == 0, phrase
    assert not judge_listing(GROUNDED + " The fast train is a walk away.", FACTS).has_hype  # whole words only


def test_invented_feature_wrong_role_number_and_unknown_number():
    text = GROUNDED.replace("2-bed", "3-bed") + " Rooftop terrace access. Only 300 steps to the park."
    verdict = judge_listing(text, FACTS)
    assert "feature:rooftop terrace" in verdict.invented
    assert "beds:3 (facts: 2)" in verdict.invented
    assert "number:300" in verdict.invented
    assert "beds" in verdict.missing  # the true bed count is no longer stated
    # 3 is not a listing number either (beds 2, baths 1.5, 4, 52, ...): flagged twice, by role and as unknown
    assert "number:3" in verdict.invented
    assert verdict.has_invented


def test_number_words_studio_and_other_neighbourhood():
    facts = dict(FACTS, beds=0, baths=1.0, monthly_fee=None)
    text = "A studio condo with one bathroom in Elm Hill, close to Riverside."
    verdict = judge_listing(text, facts)
    assert "beds" in verdict.covered and "baths" in verdict.covered
    assert "monthly_fee" not in verdict.covered + verdict.missing  # no fee, no fact to cover
    assert verdict.invented == ("neighbourhood:Riverside",)
    assert not verdict.length_ok  # 13 words < 20


def test_vague_answer_covers_little():
    verdict = judge_listing("A lovely condo in a great neighbourhood.", FACTS)
    assert verdict.covered == ("property_type",)
    assert verdict.coverage == pytest.approx(1 / 13)


def test_hedges_and_length_penalty():
    config = JudgeConfig(min_words=5, max_words=30)
    long_hedged = GROUNDED + " It may be worth noting that I cannot verify these details, so please verify them."
    verdict = judge_listing(long_hedged, FACTS, config)
    assert {"may ", "cannot verify", "please verify"} <= set(verdict.hedges)
    assert not verdict.length_ok
    assert verdict.score == pytest.approx(1.0 - 0.05 * len(verdict.hedges) - 0.1)


def test_prefer_picks_the_higher_score_and_ties():
    good, hype = judge_listing(GROUNDED, FACTS), judge_listing(GROUNDED + "!!!", FACTS)
    assert prefer(good, hype) == "A" and prefer(hype, good) == "B" and prefer(good, good) == "tie"


def test_judge_agrees_with_the_dataset_labels():
    """On the demo dataset (a different seed from the shipped one), every chosen answer covers all its facts with no
    hype and nothing invented, beats its near-miss, and each near-miss kind trips the check it is about."""
    from training.data import build_rows

    rows = build_rows(seed=7, n_listings=60)["prefs_eval.jsonl"]
    assert len({r["kind"] for r in rows}) >= 5
    for row in rows:
        chosen = judge_listing(row["chosen"][-1]["content"], row["listing"])
        rejected = judge_listing(row["rejected"][-1]["content"], row["listing"])
        assert chosen.coverage == 1.0 and not chosen.has_hype and not chosen.has_invented, row["chosen"]
        assert prefer(chosen, rejected) == "A", (row["kind"], row["rejected"])
        if row["kind"] == "hype":
            assert rejected.has_hype
        if row["kind"] in {"invented_feature", "wrong_number"}:
            assert rejected.has_invented, row["rejected"]
        if row["kind"] in {"vague", "omits_facts"}:
            assert rejected.coverage < 0.5
        if row["kind"] == "drops_a_fact":
            assert rejected.coverage < chosen.coverage and not rejected.has_invented


def test_repetition_counts_repeated_word_trigrams():
    assert repetition("") == 0.0 and repetition("two words") == 0.0
    assert repetition(GROUNDED) == 0.0
    # "a b c a b c": trigrams abc bca cab abc -> one repeat of four
    assert repetition("A b, c. a B c!") == pytest.approx(1 / 4)
    looping = "The 1300 sq ft home. " * 5  # 5 words per loop, 25 words, 23 trigrams, the first 5 are new
    assert repetition(looping) == pytest.approx(18 / 23)
    verdict = judge_listing(GROUNDED + " " + GROUNDED, FACTS)
    assert verdict.repetition > 0.45 and verdict.to_dict()["repetition"] == verdict.repetition
    # folded into the score: a loop costs w_repetition per unit of repetition (1.0 by default)
    assert verdict.score == pytest.approx(judge_listing(GROUNDED, FACTS).score - 0.1 * (not verdict.length_ok)
                                          - 1.0 * verdict.repetition)


def test_an_answer_cut_by_the_length_limit_scores_lower_and_is_flagged():
    ended = judge_listing(GROUNDED, FACTS, finish_reason="stop")
    cut = judge_listing(GROUNDED, FACTS, finish_reason="length")
    unknown = judge_listing(GROUNDED, FACTS)
    assert ended.truncated is False and cut.truncated is True and unknown.truncated is None
    assert ended.score == pytest.approx(1.0) and unknown.score == pytest.approx(1.0)
    assert cut.score == pytest.approx(1.0 - 0.5)
    assert cut.to_dict()["truncated"] is True


def test_garbled_numbers_fuse_or_move_facts_and_are_a_subset_of_invented():
    # 940 sq ft stated as baths (a fact in another fact's role); 2940 and 94 fuse the area; 7 is simply invented
    text = GROUNDED + " It has 940 baths and 2940 square feet, 94 closets and 7 windows."
    verdict = judge_listing(text, FACTS)
    assert "baths:940 (facts: 1.5)" in verdict.garbled
    assert "number:2940" in verdict.garbled and "number:94" in verdict.garbled
    assert "number:7" in verdict.invented and "number:7" not in verdict.garbled
    assert set(verdict.garbled) <= set(verdict.invented)
    # the area in the year's role after a colon ("Year built: 1940" for a 1940 sq ft home) is a moved fact too
    text = GROUNDED.replace("940 sq ft", "1940 sq ft").replace("built in 2010", "Year built: 1940")
    moved = judge_listing(text, dict(FACTS, area_sqft=1940))
    assert any(g.startswith("year_built:1940") for g in moved.garbled), moved.garbled


def test_a_facts_number_under_a_unit_no_fact_has_is_garbled():
    """As the quick dpo adapter wrote for a 17-minute walk: "2 baths across 17 days a month". Only a fact's own
    number counts here (an unknown number is already invented); the facts' own units and phrases stay clean."""
    text = GROUNDED + " The 4 days a month of sun and a 2-year lease."
    verdict = judge_listing(text, FACTS)
    assert "unit:4 days" in verdict.garbled and "unit:2 year" in verdict.garbled
    assert set(verdict.garbled) <= set(verdict.invented) and verdict.score < judge_listing(GROUNDED, FACTS).score
    unknown = judge_listing(GROUNDED + " A 12-month lease.", FACTS)
    assert unknown.invented == ("number:12",) and unknown.garbled == ()
    clean = judge_listing(GROUNDED + " The 52 express bus runs every 10 minutes.", FACTS)
    assert not any(i.startswith("unit:") for i in clean.invented)


def test_a_partial_listing_counts_only_the_stated_facts():
    partial = dict(FACTS, features=["heat pump"], unstated=["monthly_fee", "year_built", "transit"])
    text = "2-bed, 1.5-bath condo in Elm Hill, 940 sq ft, freshly refinished, with a heat pump."
    verdict = judge_listing(text, partial)
    # type, beds, baths, area, neighbourhood, condition + 1 feature; nothing unstated is required
    assert verdict.missing == () and len(verdict.covered) == 7 and verdict.invented == ()
    # claiming an unstated fact is inventing it: the fee, the year, the walk, an unlisted feature
    claims = judge_listing(text + " Monthly fee $805, built in 2010, a 4-minute walk to the bus, in-unit laundry.",
                           partial)
    assert {"monthly_fee:805 (facts: None)", "year_built:2010 (facts: None)", "transit_minutes:4 (facts: None)",
            "feature:in-unit laundry"} <= set(claims.invented)

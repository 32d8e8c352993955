"""The demo dataset: deterministic, split by listing, grounded chosen answers, real near-misses as rejected."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from training.data import FILES, build_dataset, build_rows, sha256_path
from training.describe import write_grounded
from training.grounding import grounding_problems, missing_facts
from training.listings import ALL_FEATURES, HYPE_TERMS, Listing, generate_listings
from training.nearmiss import NEAR_MISS_KINDS

FACT_KEYS = {"id", "property_type", "beds", "baths", "area_sqft", "neighbourhood", "transit", "transit_minutes",
             "features", "monthly_fee", "year_built", "condition"}


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {name.removesuffix(".jsonl"): value for name, value in build_rows(seed=0).items()}


def test_listings_are_deterministic_distinct_and_follow_the_contract():
    first, again, other = generate_listings(0), generate_listings(0), generate_listings(1)
    assert [l.facts() for l in first] == [l.facts() for l in again]
    assert [l.facts() for l in first] != [l.facts() for l in other]
    assert len({json.dumps({k: v for k, v in l.facts().items() if k != "id"}, sort_keys=True) for l in first}) >= 600
    facts = first[0].facts()
    assert set(facts) == FACT_KEYS
    assert isinstance(facts["baths"], float) and isinstance(facts["features"], list)
    assert Listing.from_facts(facts) == first[0]
    assert all(f in ALL_FEATURES for l in first for f in l.features)
    assert all(term == term.lower() for term in HYPE_TERMS)


def test_feature_vocabulary_is_substring_free():
    # The grounding check (and the eval judge) detect features by substring: no feature may contain another.
    assert not [(a, b) for a in ALL_FEATURES for b in ALL_FEATURES if a != b and a in b]


def test_build_is_byte_for_byte_deterministic(tmp_path):
    first = build_dataset(tmp_path / "a", seed=3, n_listings=60)
    second = build_dataset(tmp_path / "b", seed=3, n_listings=60)
    other = build_dataset(tmp_path / "c", seed=4, n_listings=60)
    assert [sha256_path(first[k]) for k in first] == [sha256_path(second[k]) for k in second]
    assert sha256_path(first["prefs_train"]) != sha256_path(other["prefs_train"])
    assert sorted(p.name for p in first.values()) == sorted(FILES)


def test_split_is_by_listing_and_no_prompt_leaks(rows):
    def ids(name):
        return {row["listing"]["id"] for row in rows[name]}

    def prompts(name):
        return {json.dumps(row["prompt"] if "prompt" in row else row["messages"][:-1]) for row in rows[name]}

    assert ids("sft_train") == ids("prefs_train") and ids("sft_eval") == ids("prefs_eval")
    assert not ids("sft_train") & ids("sft_eval")
    assert len(ids("sft_train")) + len(ids("sft_eval")) == 800
    train_prompts = prompts("sft_train") | prompts("prefs_train")
    assert not train_prompts & (prompts("sft_eval") | prompts("prefs_eval"))


def test_every_chosen_answer_mentions_only_facts_of_its_listing(rows):
    answers = [(r["messages"][-1]["content"], r["listing"]) for name in ("sft_train", "sft_eval") for r in rows[name]]
    answers += [(r["chosen"][0]["content"], r["listing"]) for name in ("prefs_train", "prefs_eval") for r in rows[name]]
    bad = [(facts["id"], grounding_problems(text, facts)) for text, facts in answers if grounding_problems(text, facts)]
    assert not bad
    # ...and it uses them: every feature, the neighbourhood and every number.
    incomplete = [(facts["id"], missing_facts(text, facts)) for text, facts in answers if missing_facts(text, facts)]
    assert not incomplete


def test_grounding_check_catches_what_it_should():
    listing = generate_listings(0, 1)[0]
    facts = listing.facts()
    text = write_grounded(listing, random.Random(0))
    assert grounding_problems(text, facts) == []
    invented = next(f for f in ALL_FEATURES if f not in facts["features"])
    assert grounding_problems(text + f" Also {invented}.", facts) == [f"invented feature: {invented}"]
    assert grounding_problems(text.replace(f"{facts['year_built']}", f"{facts['year_built'] + 7}"), facts)
    assert grounding_problems("AMAZING " + text, facts) == ["hype: amazing"]


def test_rejected_answers_are_the_near_miss_they_claim_to_be(rows):
    prefs = rows["prefs_train"] + rows["prefs_eval"]
    for split in ("prefs_train", "prefs_eval"):
        assert set(Counter(row["kind"] for row in rows[split])) == set(NEAR_MISS_KINDS)  # weights: the test below
    misplaced = []
    for row in prefs:
        chosen, rejected, facts = row["chosen"][0]["content"], row["rejected"][0]["content"], row["listing"]
        assert rejected != chosen
        problems = grounding_problems(rejected, facts)
        if row["kind"] == "invented_feature":
            invented = [p for p in problems if p.startswith("invented feature")]
            assert len(invented) == 1 and len(problems) == 1, problems
            # same wording, one feature more: a near-miss, not a different answer
            # ", X" in a list, or " and X" beside a single feature
            assert len(rejected) - len(chosen) - len(invented[0].split(": ", 1)[1]) in (2, 5)
        elif row["kind"] == "wrong_number":
            assert problems and all("number" in p or p.startswith("wrong ") for p in problems), problems
            assert abs(len(rejected) - len(chosen)) <= 3
        elif row["kind"] == "misplaced_number":
            # one fact's number in another's role (a wrong number where the listing has no two to swap)
            assert problems and all("number" in p or p.startswith("wrong ") for p in problems), problems
            assert abs(len(rejected) - len(chosen)) <= 4
            own = {float(facts[k]) for k in ("beds", "baths", "area_sqft", "transit_minutes", "year_built",
                                             "monthly_fee") if facts.get(k) is not None}
            misplaced.append(len(problems) == 1 and float(problems[0].split(": ", 1)[1].split(" ")[0].replace(",", "")) in own)
        elif row["kind"] == "hype":
            assert any(p.startswith("hype") for p in problems)
        elif row["kind"] == "drops_a_fact":
            # the chosen answer less one of its sentences: nothing wrong, something missing
            # (that the judge then finds a fact missing is tests/eval/test_judge.py's to check)
            assert not problems, (chosen, rejected)
            sentences = lambda text: {s.rstrip(".") for s in text.split(". ")}  # noqa: E731
            assert sentences(rejected) < sentences(chosen), (chosen, rejected)
        elif row["kind"] in ("vague", "omits_facts"):
            assert not problems and len(missing_facts(rejected, facts)) >= (1 if facts.get("unstated") else 4)
        elif row["kind"] == "over_hedged":
            assert not problems and any(w in rejected for w in ("verify", "guarantee", "confirmed"))
    assert sum(misplaced) >= 0.9 * len(misplaced) > 0


def test_rows_are_trl_conversational(rows):
    from trl.data_utils import is_conversational

    sft, pref = rows["sft_train"][0], rows["prefs_train"][0]
    assert [m["role"] for m in sft["messages"]] == ["user", "assistant"]
    assert is_conversational({"messages": sft["messages"]})
    assert is_conversational({k: pref[k] for k in ("prompt", "chosen", "rejected")})
    assert [m["role"] for m in pref["prompt"]] == ["user"] and pref["chosen"][0]["role"] == "assistant"


def test_prompts_and_answers_vary(rows):
    answers = [r["chosen"][0]["content"] for r in rows["prefs_train"]]
    openings = Counter(a.split(" ")[1] for a in answers)
    assert len(openings) >= 5
    asks = Counter(r["prompt"][0]["content"].splitlines()[0][:20] for r in rows["prefs_train"])
    assert len(asks) >= 8


def test_heldout_phrasing_families_never_reach_training(rows):
    from training.prompts import HELDOUT_FAMILIES, TRAIN_FAMILIES

    for name in ("sft_train", "prefs_train", "sft_eval"):
        assert {r["family"] for r in rows[name]} == set(TRAIN_FAMILIES), name
    assert {r["family"] for r in rows["prompts_heldout"]} == set(HELDOUT_FAMILIES)
    assert set(HELDOUT_FAMILIES) <= {r["family"] for r in rows["prefs_eval"]}
    assert len(rows["prompts_heldout"]) >= 40
    # held-out prompts are about eval listings only
    train_ids = {r["listing"]["id"] for r in rows["sft_train"]}
    assert not {r["listing"]["id"] for r in rows["prompts_heldout"]} & train_ids


def test_heldout_shorthand_abbreviations_never_reach_training(rows):
    # The trained `mls` family abbreviates too (3BR/2BA, 1,030 SF), but not as the held-out shorthand does
    # ("3bd / 2ba"): the held-out family's wording stays unseen, not only its layout.
    tiny_pair = re.compile(r"\b(\d+bd|studio) / \d+(\.5)?ba\b", re.IGNORECASE)
    assert sum(bool(tiny_pair.search(r["messages"][0]["content"])) for r in rows["prompts_heldout"]) > 40
    for name in ("sft_train", "prefs_train"):
        for row in rows[name]:
            prompt = row["messages"][0]["content"] if "messages" in row else row["prompt"][0]["content"]
            assert not tiny_pair.search(prompt), (name, prompt)
    mls = [r["messages"][0]["content"] for r in rows["sft_train"] if r["family"] == "mls"]
    assert len(mls) > 100 and sum(bool(re.search(r"\d(BR|BA)\b", p)) for p in mls) > 30


def test_training_pairs_weight_the_near_misses_sft_still_makes(rows):
    from training.data import TRAIN_KIND_WEIGHTS

    train, held_out = Counter(r["kind"] for r in rows["prefs_train"]), Counter(r["kind"] for r in rows["prefs_eval"])
    total, weight = sum(train.values()), sum(TRAIN_KIND_WEIGHTS.values())
    for kind, w in TRAIN_KIND_WEIGHTS.items():
        assert abs(train[kind] / total - w / weight) < 0.01, (kind, train)
    assert set(held_out) == set(NEAR_MISS_KINDS) and max(held_out.values()) - min(held_out.values()) <= 1


def test_partial_prompts_state_only_what_the_listing_states(rows):
    from training.listings import stated_facts

    partial = [r for name in ("sft_train", "prompts_heldout") for r in rows[name] if r["listing"].get("unstated")]
    assert len(partial) > 100
    for row in partial:
        prompt = (row["messages"][0]["content"]).lower()
        facts = stated_facts(row["listing"])
        original = row["listing"]
        if facts["year_built"] is None:  # (a stated condition may name the same year: "fully updated in 2021")
            assert str(original["year_built"]) not in prompt.replace((facts["condition"] or "").lower(), ""), row
        if facts["transit"] is None:
            assert original["transit"].split(" walk to ")[1].lower().removeprefix("the ") not in prompt, row
        if facts["monthly_fee"] is None and original["monthly_fee"] is not None:
            assert f"${original['monthly_fee']}" not in prompt, row


def test_answers_follow_the_order_and_the_area_format_the_prompt_gave(rows):
    # Features, transit, year/condition and fee appear in the answer in the order the asker wrote them (the opening
    # with type, size and place first), and the area with a thousands separator exactly when the prompt used one.
    from training.describe import asked_in

    def blocks(order: dict[str, int]) -> dict[str, int]:  # the features sentence stands where its first one does
        features = [at for key, at in order.items() if key.startswith("feature:")]
        return {**{k: at for k, at in order.items() if not k.startswith("feature:")}, "features": min(features)}

    checked = commas = 0
    for row in rows["sft_train"][:300]:
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        listing = Listing.from_facts(row["listing"])
        asked_how = asked_in(prompt, listing)
        asked, answered = asked_how.order, asked_in(answer, listing).order
        if asked_how.area_commas is not None:
            written = f"{listing.area_sqft:,}" if asked_how.area_commas else f"{listing.area_sqft}"
            assert re.search(rf"(?<![\d,]){written}(?![\d,])", answer), (prompt, answer)
            commas += asked_how.area_commas and listing.area_sqft >= 1000
        assert set(answered) >= set(asked), (prompt, answer)
        for keys in ([k for k in asked if k.startswith("feature:")], list(blocks(asked))):
            by_prompt = sorted(keys, key=lambda k: blocks(asked).get(k, asked.get(k)))
            by_answer = sorted(keys, key=lambda k: blocks(answered).get(k, answered.get(k)))
            assert by_prompt == by_answer, (prompt, answer)
        checked += len(blocks(asked)) > 2
    assert checked > 200 and commas > 10


def test_ensure_dataset_rebuilds_what_another_generator_or_seed_wrote(tmp_path):
    from training import data

    first = data.ensure_dataset(tmp_path, seed=0)
    mtime = first["sft_train"].stat().st_mtime_ns
    assert data.ensure_dataset(tmp_path, seed=0)["sft_train"].stat().st_mtime_ns == mtime  # reused as it is
    sha = sha256_path(first["sft_train"])
    first["sft_train"].write_text("{}\n")  # edited by hand: built again
    assert sha256_path(data.ensure_dataset(tmp_path, seed=0)["sft_train"]) == sha
    other = data.ensure_dataset(tmp_path, seed=1)  # another seed is not silently answered with seed 0's rows
    assert sha256_path(other["sft_train"]) != sha
    stamp = json.loads((tmp_path / data.STAMP).read_text())
    (tmp_path / data.STAMP).write_text(json.dumps({**stamp, "generator": data.GENERATOR_VERSION - 1}))
    assert sha256_path(data.ensure_dataset(tmp_path, seed=1)["sft_train"]) == sha256_path(other["sft_train"])
    assert json.loads((tmp_path / data.STAMP).read_text())["generator"] == data.GENERATOR_VERSION


def test_heldout_prompts_do_not_move_when_training_rows_are_written_differently():
    # another number of SFT rows per listing draws the shared text stream differently; the held-out prompts, which
    # evaluations compare models on across dataset changes, stay byte for byte the same
    one, two = build_rows(seed=0, n_listings=80, sft_per_listing=1), build_rows(seed=0, n_listings=80, sft_per_listing=2)
    assert one["sft_train.jsonl"] != two["sft_train.jsonl"]
    assert one["prompts_heldout.jsonl"] == two["prompts_heldout.jsonl"]

"""Rejected answers: plausible near-misses of a grounded description, one writer per kind.

Good preference data lives on the line between fine and better, so each rejected answer is something a weak model
or a careless copywriter would plausibly write, not garbage:

- `hype`             the facts, buried in hype words and exclamation marks (terms from `HYPE_TERMS`)
- `vague`            generic praise that could describe any property; almost no facts
- `invented_feature` the grounded wording with exactly one feature the listing does not have
- `wrong_number`     the grounded wording with exactly one number wrong (beds, baths, area, minutes, fee or year)
- `misplaced_number` the grounded wording with one fact's number in another fact's role ("17-bed" for a 2-bed
                     17 minutes from the streetcar, "1979 sq ft" for a home built in 1979): the error a small
                     model makes most on wordings it never saw (README, "What made the adapters loop")
- `over_hedged`      the facts, smothered in hedges and an unrequested lecture
- `omits_facts`      accurate but leaves out most facts (features, transit, fee)
- `drops_a_fact`     the grounded wording with one sentence after the opening left out (the features, the transit,
                     the year and condition, or the fee): accurate and complete but for that, the way the SFT
                     adapter most often falls short

`write_near_miss(kind, listing, rng, asked)` is pure given the rng state. For the kinds in `REPLAY_KINDS` the caller
passes an rng in the state the chosen answer was written from, and how the prompt asked (`asked`): the pair then
differs only in the error (the DPO signal is the error itself).
"""

from __future__ import annotations

import dataclasses
import random

from training.describe import Asked, bed_bath_phrase, fmt_area, fmt_baths, grounded_sentences, join_list
from training.listings import ALL_FEATURES, HYPE_TERMS, Listing, _TYPES

NEAR_MISS_KINDS: list[str] = ["hype", "vague", "invented_feature", "wrong_number", "over_hedged", "omits_facts",
                               "misplaced_number", "drops_a_fact"]
REPLAY_KINDS = frozenset({"invented_feature", "wrong_number", "misplaced_number", "drops_a_fact"})


_HYPE_ADJECTIVES = ["amazing", "stunning", "incredible", "breathtaking", "jaw-dropping", "luxurious", "spectacular",
                    "unbelievable"]
assert set(_HYPE_ADJECTIVES) <= set(HYPE_TERMS)


def _hype(listing: Listing, rng: random.Random) -> str:
    words = rng.sample(_HYPE_ADJECTIVES, 3)
    kind, place = listing.property_type, listing.neighbourhood
    opening = rng.choice([
        f"{words[0].upper()} {kind} in {place}!!!",
        f"WOW! {words[0].capitalize()} {kind} alert in {place}!",
        f"Your {words[0]} {kind} is finally here!!",
    ])
    size = (f"{bed_bath_phrase(listing, rng).capitalize()} and {fmt_area(listing.area_sqft, rng)} of pure {words[1]} living."
            if listing.states("area_sqft") else f"{bed_bath_phrase(listing, rng).capitalize()} of pure {words[1]} living.")
    features = list(listing.features)
    # hype people type sits on the features themselves ("STUNNING quartz countertops"), so two times in three it does
    body = [size, rng.choice([f"Enjoy {join_list(features)} - simply {words[2]}!",
                              f"{words[2].capitalize()} {join_list(features)}!",
                              f"{words[2].upper()} {features[0]}" + (f" and {join_list(features[1:])}!!" if features[1:]
                                                                      else "!!")])]
    if listing.states("transit"):
        body.append(rng.choice([f"Just {listing.transit}!", f"Steps from everything - {listing.transit}!"]))
    rng.shuffle(body)
    closer = rng.choice([
        "This is a must see and it won't last!!!",
        "Once-in-a-lifetime opportunity - book your showing NOW!",
        "Dream home alert! Don't miss out!!!",
        "Unbelievable value. Call today before it's gone!",
    ])
    return " ".join([opening, *body, closer])


def _vague(listing: Listing, rng: random.Random) -> str:
    kind = listing.property_type
    sentences = [
        rng.choice([f"A lovely {kind} in a great neighbourhood.", f"Charming {kind} in a popular part of town.",
                    f"A wonderful {kind} with lots to offer.", f"Nice {kind} in a convenient location."]),
        rng.choice(["Plenty of space for everyone and lots of nice features throughout.",
                    "Comfortable rooms and a practical layout.", "Great layout with room to grow.",
                    "Offers everything you need and more."]),
        rng.choice(["Close to transit, shops and parks.", "Convenient to transit and amenities.",
                    "Everything is nearby.", "Easy access to all the essentials."]),
        rng.choice(["Well kept and priced right.", "Come see it for yourself.", "A great place to call home.",
                    "Contact us for more details."]),
    ]
    return " ".join(sentences)


def _side_rng(listing: Listing, purpose: str) -> random.Random:
    # Choices that must not consume the wording rng (which replays the chosen answer) come from a seeded side rng.
    return random.Random(f"{listing.id}:{purpose}")


def _invented_feature(listing: Listing, rng: random.Random, asked: Asked | None = None) -> str:
    pool = sorted({f for group in _TYPES[listing.property_type][5] for f in group} - set(listing.features))
    if not pool:  # every plausible feature is present: fall back to the whole vocabulary
        pool = sorted(set(ALL_FEATURES) - set(listing.features))
    extra = _side_rng(listing, "invented").choice(pool)
    return " ".join(grounded_sentences(listing, rng, extra_feature=extra, asked=asked))


def wrong_number_listing(listing: Listing, rng: random.Random) -> Listing:
    """A copy of `listing` with exactly one numeric fact changed to a plausible wrong value."""
    fields = ["baths"] + [key for key, fact in (("area_sqft", "area_sqft"), ("transit_minutes", "transit"),
                                                ("year_built", "year_built")) if listing.states(fact)]
    if listing.beds >= 1:
        fields.append("beds")
    if listing.monthly_fee is not None and listing.states("monthly_fee"):
        fields.append("monthly_fee")
    field = rng.choice(fields)
    value = getattr(listing, field)
    if field == "beds":
        new = value + 1 if value == 1 or rng.random() < 0.5 else value - 1
    elif field == "baths":
        # Stay on the same side of 1 so the wording ('bath' / 'baths') and thus the rng path stay identical.
        new = value + rng.choice([0.5, 1.0]) if value <= 1 or rng.random() < 0.5 else max(1.5, value - 1.0)
        if new == value:
            new = value + 1.0
    elif field == "area_sqft":
        new = value + rng.choice([-1, 1]) * rng.randrange(150, 450, 10)
        new = new if new > 200 else value + 300
    elif field == "transit_minutes":
        new = value + rng.choice([-1, 1]) * rng.randint(4, 9)
        new = new if new >= 1 else value + 6
    elif field == "monthly_fee":
        new = value + rng.choice([-1, 1]) * rng.randrange(100, 300, 5)
        new = new if new > 50 else value + 150
    else:
        new = value + rng.choice([-1, 1]) * rng.randint(6, 25)
    return _with_number(listing, field, new)


def _with_number(listing: Listing, key: str, value: float) -> Listing:
    """A copy of `listing` with numeric fact `key` set to `value` (the transit phrase follows its minutes)."""
    changes: dict = {key: value}
    if key == "transit_minutes":
        changes["transit"] = listing.transit.replace(f"a {listing.transit_minutes}-minute", f"a {value}-minute", 1)
    return dataclasses.replace(listing, **changes)


def _wrong_number(listing: Listing, rng: random.Random, asked: Asked | None = None) -> str:
    wrong = wrong_number_listing(listing, _side_rng(listing, "wrong_number"))
    return " ".join(grounded_sentences(wrong, rng, asked=asked))


_NUMERIC_FACTS = (("beds", "beds"), ("baths", "baths"), ("area_sqft", "area_sqft"),
                  ("transit_minutes", "transit"), ("year_built", "year_built"), ("monthly_fee", "monthly_fee"))
_WHOLE = {"beds", "area_sqft", "transit_minutes", "year_built", "monthly_fee"}  # whole numbers only


def misplaced_number_listing(listing: Listing, rng: random.Random) -> Listing | None:
    """A copy of `listing` with one numeric fact set to another stated fact's number, or None when no two stated
    numbers can swap roles (a studio with no other stated number)."""
    stated = {key: getattr(listing, key) for key, fact in _NUMERIC_FACTS
              if listing.states(fact) and getattr(listing, key) is not None and getattr(listing, key) != 0}
    moves = [(target, source) for target in stated for source in stated
             if target != source and stated[source] != stated[target]
             and (target not in _WHOLE or float(stated[source]).is_integer())
             and not (target == "baths" and (stated[source] <= 1) != (stated[target] <= 1))  # same wording path
             and not (target == "year_built" and not 1000 <= stated[source] <= 9999)]  # a year reads as one
    if not moves:
        return None
    target, source = rng.choice(moves)
    value = stated[source]
    return _with_number(listing, target, int(value) if target in _WHOLE else float(value))


def _misplaced_number(listing: Listing, rng: random.Random, asked: Asked | None = None) -> str:
    moved = misplaced_number_listing(listing, _side_rng(listing, "misplaced_number"))
    if moved is None:  # nothing to misplace: fall back to a wrong number, the nearest kind
        moved = wrong_number_listing(listing, _side_rng(listing, "wrong_number"))
    return " ".join(grounded_sentences(moved, rng, asked=asked))


def _drops_a_fact(listing: Listing, rng: random.Random, asked: Asked | None = None) -> str:
    sentences = grounded_sentences(listing, rng, asked=asked)
    # never the opening, nor a "no monthly fee" sentence (no fact a reader could miss)
    candidates = [i for i, sentence in enumerate(sentences[1:], 1)
                  if not (listing.monthly_fee is None and "fee" in sentence.lower())]
    drop = _side_rng(listing, "drops_a_fact").choice(candidates)
    return " ".join(sentences[:drop] + sentences[drop + 1:])


def _over_hedged(listing: Listing, rng: random.Random) -> str:
    kind, place = listing.property_type, listing.neighbourhood
    sentences = [
        rng.choice([
            f"Based on the information provided, this appears to be a {kind} in {place}, although I cannot verify it.",
            f"I can't guarantee accuracy, but this may be a {kind} located in what is described as {place}.",
        ]),
        f"It reportedly has {bed_bath_phrase(listing, rng)}"
        + (f" and roughly {fmt_area(listing.area_sqft, rng)}" if listing.states("area_sqft") else "")
        + ", though measurements can vary and should be confirmed.",
        f"It is said to be {listing.transit}, depending on your walking pace." if listing.states("transit") else
        "Travel times have not been confirmed.",
        f"Listed features possibly include {join_list(list(listing.features))}.",
        rng.choice([
            "Please remember that a listing description is not a legal document: always hire a licensed inspector, "
            "review the disclosures with a real-estate lawyer, and never rely on marketing text alone.",
            "Before making any decision, it is important to consult qualified professionals, compare several "
            "properties, and consider your long-term financial situation carefully.",
        ]),
    ]
    return " ".join(sentences)


def _omits_facts(listing: Listing, rng: random.Random) -> str:
    kind, place = listing.property_type, listing.neighbourhood
    beds = "studio" if listing.beds == 0 else f"{listing.beds}-bedroom"
    year = f", built in {listing.year_built}" if listing.states("year_built") else ""
    return rng.choice([
        f"{beds.capitalize()} {kind} in {place}. Contact us for details.",
        f"A {beds} {kind} in {place}{year}.",
        f"{place} {kind} with {fmt_baths(listing.baths)} bathrooms. Ask for more information.",
    ])


_WRITERS = {
    "hype": _hype,
    "vague": _vague,
    "invented_feature": _invented_feature,
    "wrong_number": _wrong_number,
    "over_hedged": _over_hedged,
    "omits_facts": _omits_facts,
    "misplaced_number": _misplaced_number,
    "drops_a_fact": _drops_a_fact,
}


def write_near_miss(kind: str, listing: Listing, rng: random.Random, asked: Asked | None = None) -> str:
    """A rejected answer of `kind` (one of NEAR_MISS_KINDS) for `listing`; the kinds in `REPLAY_KINDS` follow the
    prompt (`asked`, `training.describe.asked_in`) like the chosen answer they replay."""
    if kind not in _WRITERS:
        raise ValueError(f"unknown near-miss kind {kind!r}; choose from {NEAR_MISS_KINDS}")
    return _WRITERS[kind](listing, rng, asked) if kind in REPLAY_KINDS else _WRITERS[kind](listing, rng)

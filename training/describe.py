"""Grounded descriptions for a listing, in varied wording (the prompts that ask for them are in training/prompts.py).

`write_grounded(listing, rng)` returns a description that uses every fact the listing states and invents none:
numbers appear as digits exactly as in the facts, features by their vocabulary name, and no subjective adjective
claims more than the facts say. Wording varies by sentence templates, sentence order and fact order, not by one
template with slots. A pure function of (listing, rng state): the dataset builder seeds `rng`, so output is
deterministic.
"""

from __future__ import annotations

import random

from training.listings import Listing

TYPE_SHORT = {"condo": "condo", "apartment": "apartment", "loft": "loft", "townhouse": "townhouse", "house": "house"}


def fmt_baths(baths: float) -> str:
    """1.0 -> '1', 1.5 -> '1.5'."""
    return f"{baths:g}"


def fmt_area(area: int, rng: random.Random) -> str:
    return rng.choice([f"{area:,} sq ft", f"{area:,} square feet", f"{area} sq ft"])


def bed_bath_phrase(listing: Listing, rng: random.Random) -> str:
    """'2-bed, 1.5-bath', '2 bedrooms and 1.5 bathrooms', 'studio with 1 bath' ..."""
    baths = fmt_baths(listing.baths)
    bath_word = "bath" if listing.baths == 1 else "baths"
    if listing.beds == 0:
        return rng.choice([f"studio with {baths} {bath_word}", f"studio layout and {baths} {bath_word}"])
    bed_word = "bedroom" if listing.beds == 1 else "bedrooms"
    return rng.choice([
        f"{listing.beds}-bed, {baths}-bath",
        f"{listing.beds} {bed_word} and {baths} {bath_word}",
        f"{listing.beds} {bed_word}, {baths} {bath_word}",
    ])


def join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---- grounded descriptions ----------------------------------------------------------------------------------------

def _article(word: str) -> str:
    """'a' or 'an' before `word` (digits read aloud: 'an 8-bed', 'an 11-bed')."""
    return "an" if word[0].lower() in "aeiou8" or word.startswith(("11", "18")) else "a"


def _opening(listing: Listing, rng: random.Random) -> str:
    kind, place = listing.property_type, listing.neighbourhood
    baths = fmt_baths(listing.baths)
    bath_word = "bath" if listing.baths == 1 else "baths"
    if not listing.states("area_sqft"):
        if listing.beds == 0:
            return rng.choice([f"Studio {kind} in {place} with {baths} {bath_word}.",
                               f"This {place} {kind} is a studio with {baths} {bath_word}."])
        bed_word = "bedroom" if listing.beds == 1 else "bedrooms"
        return rng.choice([f"{listing.beds}-bed, {baths}-bath {kind} in {place}.",
                           f"This {kind} in {place} has {listing.beds} {bed_word} and {baths} {bath_word}."])
    area = fmt_area(listing.area_sqft, rng)
    if listing.beds == 0:
        return rng.choice([
            f"{_article(kind).capitalize()} {kind} in {place}: studio layout, {baths} {bath_word}, {area}.",
            f"This {place} {kind} is a studio with {baths} {bath_word} across {area}.",
            f"Studio {kind} in {place} with {baths} {bath_word} and {area} of living space.",
        ])
    bed_word = "bedroom" if listing.beds == 1 else "bedrooms"
    return rng.choice([
        f"{listing.beds}-bed, {baths}-bath {kind} in {place}, {area}.",
        f"This {kind} in {place} has {listing.beds} {bed_word} and {baths} {bath_word} across {area}.",
        f"{_article(str(listing.beds)).capitalize()} {listing.beds}-bedroom {kind} in {place} with {baths} {bath_word} and {area} "
        "of living space.",
        f"{place} {kind} offering {listing.beds} {bed_word}, {baths} {bath_word} and {area}.",
    ])


def _transit(listing: Listing, rng: random.Random) -> str:
    return rng.choice([
        f"It is {listing.transit}.",
        f"Transit: {listing.transit}.",
        f"The location is {listing.transit}.",
        f"You are {listing.transit}.",
        f"Commuting: {listing.transit}.",
    ])


def features_sentence(features: list[str], rng: random.Random) -> str:
    items = join_list(features)
    return rng.choice([
        f"Features include {items}.",
        f"Inside and out: {items}.",
        f"The home comes with {items}.",
        f"Highlights: {items}.",
        f"You also get {items}.",
    ])


def _year_condition(listing: Listing, rng: random.Random) -> str | None:
    year, condition = listing.states("year_built"), listing.states("condition")
    if year and condition:
        return rng.choice([
            f"Built in {listing.year_built}, {listing.condition}.",
            f"The {listing.year_built} build is {listing.condition}.",
            f"Condition: {listing.condition} (built {listing.year_built}).",
            f"Year built {listing.year_built}; {listing.condition}.",
        ])
    if year:
        return rng.choice([f"Built in {listing.year_built}.", f"Year built: {listing.year_built}."])
    if condition:
        return rng.choice([f"The home is {listing.condition}.", f"Condition: {listing.condition}."])
    return None


def _fee(listing: Listing, rng: random.Random) -> str | None:
    if not listing.states("monthly_fee"):
        return None
    if listing.monthly_fee is None:
        return rng.choice(["No monthly fee.", "There is no monthly fee.", "No strata or association fees."])
    return rng.choice([
        f"Monthly fee: ${listing.monthly_fee}.",
        f"Fees are ${listing.monthly_fee} a month.",
        f"The monthly fee is ${listing.monthly_fee}.",
    ])


def grounded_sentences(listing: Listing, rng: random.Random, extra_feature: str | None = None) -> list[str]:
    """The sentences of a grounded description, in a varied order.

    `extra_feature` is slipped into the feature list after the shuffle, so that the same rng state yields the same
    wording with exactly one added feature (the "invented feature" near-miss)."""
    feats = list(listing.features)
    rng.shuffle(feats)
    slot = rng.randrange(len(feats) + 1)
    if extra_feature is not None:
        feats.insert(slot, extra_feature)
    transit = _transit(listing, rng) if listing.states("transit") else None
    middle = [s for s in (transit, features_sentence(feats, rng), _year_condition(listing, rng)) if s]
    rng.shuffle(middle)
    return [s for s in (_opening(listing, rng), *middle, _fee(listing, rng)) if s]


def write_grounded(listing: Listing, rng: random.Random) -> str:
    """A description that uses every fact `listing` states and invents none."""
    return " ".join(grounded_sentences(listing, rng))

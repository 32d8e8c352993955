"""Grounded descriptions for a listing, in varied wording (the prompts that ask for them are in training/prompts.py).

`write_grounded(listing, rng)` returns a description that uses every fact the listing states and invents none:
numbers appear as digits exactly as in the facts, features by their vocabulary name, and no subjective adjective
claims more than the facts say. Wording varies by sentence templates, sentence order and fact order, not by one
template with slots. A pure function of (listing, rng state): the dataset builder seeds `rng`, so output is
deterministic.

Given how the prompt asked (`asked_in`), the description follows it: the facts in the order the asker gave them
(features in their order; transit, year/condition and fee sentences where their first fact stands in the prompt;
the opening, with type, size and place, first), and the area written as the asker wrote it ("1,850" or "1850"). A
small model that copies facts front to back, digit for digit, leaves out and garbles fewer of them than one that
must remember which of a shuffled set it has used and reformat numbers on the way (README, "What made the
adapters loop").
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from training.listings import Listing

TYPE_SHORT = {"condo": "condo", "apartment": "apartment", "loft": "loft", "townhouse": "townhouse", "house": "house"}


def fmt_baths(baths: float) -> str:
    """1.0 -> '1', 1.5 -> '1.5'."""
    return f"{baths:g}"


def fmt_area(area: int, rng: random.Random, commas: bool | None = None) -> str:
    """The area in one of three wordings; `commas` (the prompt's own way of writing it) fixes whether the number
    has a thousands separator, else the wording decides. The same rng draw either way."""
    unit = rng.choice(["commas sq ft", "commas square feet", "plain sq ft"])
    style, unit = unit.split(" ", 1)
    with_commas = style == "commas" if commas is None else commas
    return f"{area:,} {unit}" if with_commas else f"{area} {unit}"


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


def _opening(listing: Listing, rng: random.Random, area_commas: bool | None = None) -> str:
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
    area = fmt_area(listing.area_sqft, rng, area_commas)
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


@dataclass(frozen=True)
class Asked:
    """How a prompt gave a listing's facts, for an answer that follows it: `order` maps 'feature:<name>', 'transit',
    'year_condition' and 'fee' to where that fact first appears in the prompt (character offset; a fact the prompt
    does not show is absent), and `area_commas` says whether it wrote the area with a thousands separator
    ("1,850" or "1850"; None when it gave no area)."""

    order: dict[str, int]
    area_commas: bool | None = None


def asked_in(prompt: str, listing: Listing) -> Asked:
    """Read `Asked` off `prompt` for `listing`'s stated facts (lower-cased substring matches)."""
    lower = prompt.lower()

    def first(*needles: str | None) -> int | None:
        hits = [m.start() for needle in needles if needle for m in [re.search(re.escape(needle.lower()), lower)] if m]
        return min(hits) if hits else None

    found: dict[str, int | None] = {f"feature:{f}": first(f) for f in listing.features}
    if listing.states("transit"):
        found["transit"] = first(listing.transit.split(" walk to ", 1)[-1].removeprefix("the "))
    year = str(listing.year_built) if listing.states("year_built") else None
    condition = listing.condition if listing.states("condition") else None
    found["year_condition"] = first(year, condition)
    if listing.states("monthly_fee"):
        fee = f"${listing.monthly_fee}" if listing.monthly_fee is not None else None
        found["fee"] = first(fee, "no monthly fee", "no hoa", "no fees", "no strata", "fee: none")
    area_commas = None
    if listing.states("area_sqft") and listing.area_sqft >= 1000:
        area_commas = re.search(rf"(?<![\d,]){listing.area_sqft:,}(?![\d,])", prompt) is not None
    elif listing.states("area_sqft"):
        area_commas = False
    return Asked({key: at for key, at in found.items() if at is not None}, area_commas)


def grounded_sentences(listing: Listing, rng: random.Random, extra_feature: str | None = None,
                       asked: Asked | None = None) -> list[str]:
    """The sentences of a grounded description, in a varied order, or following the prompt when `asked` is given.

    `extra_feature` is slipped into the feature list after the shuffle, so that the same rng state yields the same
    wording with exactly one added feature (the "invented feature" near-miss). `asked` changes no rng draw (it
    reorders what the rng chose and fixes how the area is written), so a replayed rng still yields the same
    wording."""
    feats = list(listing.features)
    rng.shuffle(feats)
    slot = rng.randrange(len(feats) + 1)
    unseen = 1 << 30  # facts the prompt does not show keep their shuffled place after those it does
    order = asked.order if asked is not None else None
    if order is not None:
        feats.sort(key=lambda f: order.get(f"feature:{f}", unseen))
    if extra_feature is not None:
        feats.insert(slot, extra_feature)
    transit = _transit(listing, rng) if listing.states("transit") else None
    middle = [(key, s) for key, s in (("transit", transit), ("features", features_sentence(feats, rng)),
                                      ("year_condition", _year_condition(listing, rng))) if s]
    rng.shuffle(middle)
    opening = _opening(listing, rng, asked.area_commas if asked is not None else None)
    fee = _fee(listing, rng)
    if order is None:
        return [s for s in (opening, *(s for _, s in middle), fee) if s]
    if fee:
        middle.append(("fee", fee))
    features_at = min((at for key, at in order.items() if key.startswith("feature:")), default=unseen)
    middle.sort(key=lambda item: features_at if item[0] == "features" else order.get(item[0], unseen))
    return [opening, *(s for _, s in middle)]


def write_grounded(listing: Listing, rng: random.Random, asked: Asked | None = None) -> str:
    """A description that uses every fact `listing` states and invents none (following the prompt when `asked`)."""
    return " ".join(grounded_sentences(listing, rng, asked=asked))

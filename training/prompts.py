"""Prompts that ask for a listing description, in the many ways people type them: phrasing families.

A *family* is one way of asking: a key: value fact sheet, facts inline in prose, informal bullet notes, a listing to
rewrite without the hype, an agent's abbreviated MLS line, terse shorthand, a question. Every family states exactly
the facts the listing states (`Listing.states`; a partial listing leaves some out, as people do), so a grounded
answer can use them all and must invent nothing else.

`write_prompt(listing, family, rng)` is a pure function of its arguments and the rng state. The dataset trains on
`TRAIN_FAMILIES` only; `HELDOUT_FAMILIES` appear only in the evaluation files, so the evaluation measures whether
the adapters generalise to wordings they never saw, not only to listings they never saw.
"""

from __future__ import annotations

import random

from training.describe import _article, fmt_baths, join_list
from training.listings import Listing

# Fact-sheet families (the original demo prompts) and free-form families.
TEMPLATED_FAMILIES: tuple[str, ...] = ("fact_list", "fact_sentence", "facts_first")
TRAIN_FAMILIES: tuple[str, ...] = TEMPLATED_FAMILIES + ("prose", "notes", "rewrite", "mls")
HELDOUT_FAMILIES: tuple[str, ...] = ("shorthand", "question")
FAMILIES: tuple[str, ...] = TRAIN_FAMILIES + HELDOUT_FAMILIES


def _beds(listing: Listing, style: str) -> str:
    """Bedrooms as people write them: 'long' (2 bedrooms), 'short' (2-bed), 'tiny' (2bd)."""
    if listing.beds == 0:
        return "studio"
    if style == "tiny":
        return f"{listing.beds}bd"
    if style == "short":
        return f"{listing.beds}-bed"
    if style == "adjective":
        return f"{listing.beds}-bedroom"
    return f"{listing.beds} bedroom" + ("s" if listing.beds > 1 else "")


def _baths(listing: Listing, style: str) -> str:
    n = fmt_baths(listing.baths)
    if style == "tiny":
        return f"{n}ba"
    if style == "short":
        return f"{n}-bath"
    return f"{n} bath" + ("" if listing.baths == 1 else "s")


def _line(listing: Listing) -> str:
    """'the Green Line' from 'a 4-minute walk to the Green Line'."""
    return listing.transit.split(" walk to ", 1)[1]


# ---- fact sheets (the demo's original templates) ------------------------------------------------------------------

def _fact_lines(listing: Listing, rng: random.Random) -> list[str]:
    lines = [
        f"Type: {listing.property_type}",
        f"Bedrooms: {listing.beds}" if listing.beds else "Bedrooms: studio (0)",
        f"Bathrooms: {fmt_baths(listing.baths)}",
        f"Area: {listing.area_sqft} sq ft" if listing.states("area_sqft") else None,
        f"Neighbourhood: {listing.neighbourhood}",
        f"Transit: {listing.transit}" if listing.states("transit") else None,
        f"Features: {', '.join(listing.features)}",
        (f"Monthly fee: ${listing.monthly_fee}" if listing.monthly_fee is not None else "Monthly fee: none")
        if listing.states("monthly_fee") else None,
        f"Year built: {listing.year_built}" if listing.states("year_built") else None,
        f"Condition: {listing.condition}" if listing.states("condition") else None,
    ]
    lines = [line for line in lines if line]
    head, rest = lines[:2], lines[2:]
    rng.shuffle(rest)
    return head + rest


def _fact_sentence(listing: Listing) -> str:
    beds = "studio" if listing.beds == 0 else f"{listing.beds} bed"
    parts = [listing.property_type, beds, f"{fmt_baths(listing.baths)} bath"]
    if listing.states("area_sqft"):
        parts.append(f"{listing.area_sqft} sq ft")
    parts.append(listing.neighbourhood)
    if listing.states("transit"):
        parts.append(listing.transit)
    text = ", ".join(parts) + f", features: {', '.join(listing.features)}"
    if listing.states("monthly_fee"):
        text += "; " + (f"${listing.monthly_fee}/month fee" if listing.monthly_fee is not None else "no monthly fee")
    if listing.states("year_built"):
        text += f"; built {listing.year_built}"
    if listing.states("condition"):
        text += f"; {listing.condition}"
    return text + "."


def _sheet_ask(listing: Listing, rng: random.Random) -> str:
    kind = listing.property_type
    short = "studio" if listing.beds == 0 else f"{listing.beds}bd"
    return rng.choice([
        f"Describe this {short} {kind} in {listing.neighbourhood}.",
        f"Write a listing description for this {kind}.",
        f"Can you write the description for my {kind} listing?",
        f"I need a short, accurate property description for a {kind} in {listing.neighbourhood}.",
        f"Draft the blurb for this {short} {kind}.",
        f"Please write a real-estate description of the {kind} below.",
        "Turn these facts into a listing description.",
        f"We're putting {_article(kind)} {kind} on the market. Write the listing text.",
    ])


def _fact_list(listing: Listing, rng: random.Random) -> str:
    ask = _sheet_ask(listing, rng)
    return ask + "\n\nFacts:\n" + "\n".join(f"- {line}" for line in _fact_lines(listing, rng))


def _fact_sentence_family(listing: Listing, rng: random.Random) -> str:
    return _sheet_ask(listing, rng) + " Details: " + _fact_sentence(listing)


def _facts_first(listing: Listing, rng: random.Random) -> str:
    ask = _sheet_ask(listing, rng)
    return "\n".join(_fact_lines(listing, rng)) + "\n\n" + ask


# ---- free-form families -------------------------------------------------------------------------------------------

def _fee_words(listing: Listing, rng: random.Random, style: str) -> str | None:
    if not listing.states("monthly_fee"):
        return None
    if listing.monthly_fee is None:
        return rng.choice(["no monthly fee", "no HOA fee", "no fees"])
    if style == "tiny":
        return rng.choice([f"${listing.monthly_fee}/mo", f"hoa ${listing.monthly_fee}", f"fees ${listing.monthly_fee}/mo"])
    return rng.choice([f"the monthly fee is ${listing.monthly_fee}", f"fees are ${listing.monthly_fee} a month",
                       f"${listing.monthly_fee} a month in condo fees"])


def _prose(listing: Listing, rng: random.Random) -> str:
    kind, place = listing.property_type, listing.neighbourhood
    opener = rng.choice([
        f"I'm selling my {_beds(listing, 'adjective')} {kind} in {place}.",
        f"We have {_article(kind)} {kind} in {place} going on the market, {_beds(listing, 'long')}.",
        f"My client's {kind} in {place} is listing next week: {_beds(listing, 'short')}.",
        f"Listing {_article(_beds(listing, 'short'))} {_beds(listing, 'short')} {kind} in {place}.",
    ])
    bits = [f"it has {_baths(listing, 'long')}"]
    if listing.states("area_sqft"):
        bits.append(rng.choice([f"about {listing.area_sqft:,} sq ft", f"{listing.area_sqft} square feet"]))
    bits.append(rng.choice(["it comes with ", "there's ", "it has "]) + join_list(list(listing.features)))
    if listing.states("transit"):
        bits.append(rng.choice([f"it's {listing.transit}", f"it's {listing.transit_minutes} minutes on foot to {_line(listing)}"]))
    fee = _fee_words(listing, rng, "long")
    if fee:
        bits.append(fee)
    if listing.states("year_built"):
        bits.append(rng.choice([f"it was built in {listing.year_built}", f"built in {listing.year_built}"]))
    if listing.states("condition"):
        bits.append(f"it's {listing.condition}")
    first, rest = bits[0], bits[1:]
    rng.shuffle(rest)
    body = first[0].upper() + first[1:] + ", " + ", ".join(rest[:-1]) + (" and " if rest[:-1] else "") + rest[-1] + "."
    ask = rng.choice([
        "Can you write the listing description?",
        "Could you write something for the listing?",
        "Write me a description for the ad, please.",
        "I need the listing text.",
        "What should the description say?",
    ])
    return f"{opener} {body} {ask}" if rng.random() < 0.7 else f"{ask} {opener} {body}"


def _note_items(listing: Listing, rng: random.Random, style: str) -> list[str]:
    items = [f"{listing.property_type}, {_beds(listing, style)} / {_baths(listing, style)}", listing.neighbourhood]
    if listing.states("area_sqft"):
        items.append(rng.choice([f"{listing.area_sqft} sqft", f"{listing.area_sqft} sq ft", f"~{listing.area_sqft} sf"]))
    items.extend(listing.features if rng.random() < 0.5 else [", ".join(listing.features)])
    if listing.states("transit"):
        items.append(rng.choice([f"{listing.transit_minutes} min walk to {_line(listing)}",
                                 f"{listing.transit_minutes} min to {_line(listing)}"]))
    fee = _fee_words(listing, rng, "tiny")
    if fee:
        items.append(fee)
    return _year_condition_shuffled(items, listing, rng, ("built", "yr"))


def _year_condition_shuffled(items: list[str], listing: Listing, rng: random.Random,
                             year_words: tuple[str, str]) -> list[str]:
    """`items` plus the year ('<word> 1994', one of `year_words`) and condition, all but the first two shuffled."""
    if listing.states("year_built"):
        items.append(rng.choice([f"{word} {listing.year_built}" for word in year_words]))
    if listing.states("condition"):
        items.append(listing.condition)
    head, rest = items[:2], items[2:]
    rng.shuffle(rest)
    return head + rest


def _notes(listing: Listing, rng: random.Random) -> str:
    bullet = rng.choice(["- ", "* ", "• "])
    lines = "\n".join(bullet + item for item in _note_items(listing, rng, rng.choice(["short", "long"])))
    ask = rng.choice(["write this up for the listing", "Can you turn my notes into a listing?",
                      "notes from the walkthrough, need a description:", "Listing description from these notes please"])
    text = f"{ask}\n{lines}" if ask.endswith(":") or rng.random() < 0.5 else f"{lines}\n\n{ask}"
    return text.lower() if rng.random() < 0.3 else text  # many people type notes without capitals


def _mls(listing: Listing, rng: random.Random) -> str:
    """An agent's abbreviated line, MLS style: '3BR/2BA condo | Lakeview | 1,030 SF | HOA $455/mo | ...'. Its
    abbreviations (BR, BA, SF, blt) are not the held-out shorthand's (bd, ba, sf), so that family stays unseen."""
    n = fmt_baths(listing.baths)
    n_beds = listing.beds
    beds = "studio" if n_beds == 0 else rng.choice([f"{n_beds}BR", f"{n_beds} br", f"{n_beds} bed"])
    baths = rng.choice([f"{n}BA", f"{n} bth", f"{n} bath"])
    items = [rng.choice([f"{beds}/{baths} {listing.property_type}", f"{listing.property_type} {beds} {baths}"]),
             listing.neighbourhood]
    if listing.states("area_sqft"):
        items.append(rng.choice([f"{listing.area_sqft} SF", f"{listing.area_sqft:,} SF", f"{listing.area_sqft}sqft"]))
    items.extend(listing.features)
    if listing.states("transit"):
        items.append(rng.choice([f"{listing.transit_minutes} min walk {_line(listing)}",
                                 f"{listing.transit_minutes}min to {_line(listing)}"]))
    if listing.states("monthly_fee"):
        fee = listing.monthly_fee
        items.append(rng.choice(["no HOA", "no fees"]) if fee is None else rng.choice([f"HOA ${fee}/mo", f"${fee} HOA",
                                                                                       f"maint ${fee}"]))
    items = _year_condition_shuffled(items, listing, rng, ("blt", "built"))
    line = rng.choice([" | ", "; ", " - "]).join(items)
    ask = rng.choice(["MLS remarks please", "write it up", "need public remarks for this one", "blurb?",
                      "can u write the ad"])
    return f"{line}\n{ask}" if rng.random() < 0.5 else f"{ask}\n{line}"


def _rewrite(listing: Listing, rng: random.Random) -> str:
    # The text to rewrite is a hype near-miss of this very listing: its facts are the listing's stated facts.
    from training.nearmiss import write_near_miss

    hype = write_near_miss("hype", listing, rng)
    ask = rng.choice([
        "Rewrite this listing without the hype:",
        "Can you tone this down and keep it factual?",
        "Make this listing less salesy, same facts:",
        "My agent wrote this. Rewrite it so it just states the facts:",
        "Please strip the sales talk out of this ad:",
        "fix this ad, keep the facts, lose the superlatives",
        "Too much? Make it plain and accurate:",
    ])
    # pasted on its own, inline in quotes, or first with the ask after it
    return rng.choice([f"{ask}\n\n\"{hype}\"", f"{ask} '{hype}'", f"\"{hype}\"\n\n{ask}"])


def _shorthand(listing: Listing, rng: random.Random) -> str:
    items = _note_items(listing, rng, "tiny")
    text = ", ".join(items).lower() if rng.random() < 0.6 else ", ".join(items)
    ask = rng.choice(["listing copy pls", "need a description", "write listing", "desc for MLS?"])
    return f"{text}. {ask}" if rng.random() < 0.6 else f"{ask}: {text}"


def _question(listing: Listing, rng: random.Random) -> str:
    kind, place = listing.property_type, listing.neighbourhood
    details = [_baths(listing, "long")]
    if listing.states("area_sqft"):
        details.append(f"{listing.area_sqft:,} square feet")
    details.append(join_list(list(listing.features)))
    if listing.states("transit"):
        details.append(f"a {listing.transit_minutes}-minute walk from {_line(listing)}")
    fee = _fee_words(listing, rng, "long")
    if fee:
        details.append(fee)
    if listing.states("year_built"):
        details.append(f"built in {listing.year_built}")
    if listing.states("condition"):
        details.append(listing.condition)
    q = rng.choice([
        f"How would you describe {_article(_beds(listing, 'short'))} {_beds(listing, 'short')} {kind} in {place} for a listing?",
        f"What's a good listing description for my {kind} in {place}? It's {_beds(listing, 'long')}.",
        f"Could you help me describe {_article(kind)} {kind} in {place} ({_beds(listing, 'long')})?",
    ])
    return f"{q} Details: {'; '.join(details)}."


_WRITERS = {
    "fact_list": _fact_list,
    "fact_sentence": _fact_sentence_family,
    "facts_first": _facts_first,
    "prose": _prose,
    "notes": _notes,
    "rewrite": _rewrite,
    "mls": _mls,
    "shorthand": _shorthand,
    "question": _question,
}
assert set(_WRITERS) == set(FAMILIES)


def write_prompt(listing: Listing, family: str, rng: random.Random) -> str:
    """A request for a description of `listing` in phrasing `family` (one of FAMILIES), stating exactly its stated
    facts."""
    if family not in _WRITERS:
        raise ValueError(f"unknown prompt family {family!r}; choose from {FAMILIES}")
    return _WRITERS[family](listing, rng)


def partial_view(listing: Listing, rng: random.Random) -> Listing:
    """A random partial view of `listing` (some optional facts and features left out), as people often give."""
    from training.listings import OPTIONAL_FACTS

    keep = {key for key in OPTIONAL_FACTS if rng.random() < 0.5}
    n = rng.randint(1, len(listing.features))
    return listing.partial(keep, tuple(rng.sample(list(listing.features), n)))

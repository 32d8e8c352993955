"""Is a description grounded in its listing? A strict, rule-based check used to build and test the dataset.

`grounding_problems(text, facts)` returns what the text claims beyond the facts (empty list: grounded):

- a feature from `ALL_FEATURES` that the listing does not have;
- a number that is not one of the listing's numbers (beds, baths, area, minutes, fee, year, or a number inside the
  transit or condition phrase), or a number in the wrong role ("3-bed" when the listing has 2 beds);
- another neighbourhood's name, or another property type;
- a hype term from `HYPE_TERMS`.

It is deliberately a dataset check, not a general judge: it knows the vocabulary the generator uses.
"""

from __future__ import annotations

import re

from training.listings import ALL_FEATURES, HYPE_TERMS, NEIGHBOURHOODS, PROPERTY_TYPES, stated_facts

_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
# (pattern, fact key): the number captured must equal the fact.
_ROLES = [
    (re.compile(r"(\d+)(?:-bed\b| bed\b| bedrooms?\b|bd\b|-bedroom\b)", re.I), "beds"),
    (re.compile(r"(\d+(?:\.\d+)?)(?:-bath\b| bath\b| baths\b| bathrooms?\b)", re.I), "baths"),
    (re.compile(r"(\d[\d,]*) (?:sq ft|square feet)", re.I), "area_sqft"),
    (re.compile(r"(\d+)-minute", re.I), "transit_minutes"),
    (re.compile(r"\$(\d[\d,]*)"), "monthly_fee"),
    (re.compile(r"\bbuilt (?:in )?(\d{4})\b|\b(\d{4}) build\b|year built:? (\d{4})", re.I), "year_built"),
]


def _as_number(token: str) -> float:
    return float(token.replace(",", ""))


def allowed_numbers(facts: dict) -> set[float]:
    """Every number a grounded description may contain."""
    facts = stated_facts(facts)
    values = [facts[k] for k in ("beds", "baths", "area_sqft", "transit_minutes", "year_built", "monthly_fee")]
    for phrase in (facts["transit"], facts["condition"]):
        values.extend(_as_number(m) for m in _NUMBER.findall(phrase or ""))
    return {float(v) for v in values if v is not None}


def grounding_problems(text: str, facts: dict) -> list[str]:
    """What `text` says that the listing `facts` do not support; an empty list means grounded."""
    problems: list[str] = []
    facts = stated_facts(facts)
    lower = text.lower()
    own = set(facts["features"])
    problems += [f"invented feature: {f}" for f in ALL_FEATURES if f in lower and f not in own]

    allowed = allowed_numbers(facts)
    problems += [f"number not in the facts: {tok}" for tok in _NUMBER.findall(text) if _as_number(tok) not in allowed]
    for pattern, key in _ROLES:
        for match in pattern.finditer(text):
            token = next(g for g in match.groups() if g)
            expected = facts.get(key)
            if expected is None or _as_number(token) != float(expected):
                problems.append(f"wrong {key}: {token} (facts say {expected})")

    for place in NEIGHBOURHOODS:
        if place != facts["neighbourhood"] and re.search(rf"\b{re.escape(place)}\b", text, re.I):
            problems.append(f"wrong neighbourhood: {place}")
    for kind in PROPERTY_TYPES:
        if kind != facts["property_type"] and re.search(rf"\b{kind}s?\b", lower):
            problems.append(f"wrong property type: {kind}")
    problems += [f"hype: {term}" for term in HYPE_TERMS if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", lower)]
    return problems


def missing_facts(text: str, facts: dict) -> list[str]:
    """Stated facts a complete description would mention but `text` does not (features, neighbourhood, numbers)."""
    facts = stated_facts(facts)
    lower = text.lower()
    missing = [f"feature: {f}" for f in facts["features"] if f not in lower]
    if facts["neighbourhood"].lower() not in lower:
        missing.append("neighbourhood")
    numbers = {_as_number(t) for t in _NUMBER.findall(text)}
    for key in ("baths", "area_sqft", "transit_minutes", "year_built", "monthly_fee"):
        if facts.get(key) is not None and float(facts[key]) not in numbers:
            missing.append(key)
    return missing

"""The listing judge: score a generated description against its listing's facts. Pure, rule-based, deterministic.

It is written apart from the dataset generator (training/nearmiss.py, training/grounding.py) on purpose: it shares
only the vocabulary (`ALL_FEATURES`, `HYPE_TERMS`, `NEIGHBOURHOODS`) and the repetition measure
(`core.text.repetition`), so a model cannot pass it by imitating the generator's sentences. What it measures:

Only the facts the prompt stated count (`training.listings.stated_facts`): a partial listing's unstated facts need not
be covered, and claiming one is inventing it.

- coverage      share of the stated facts the text states: property type, beds ("studio" for 0), baths, area,
                neighbourhood, transit line, walking minutes, monthly fee (if any), year built, condition, and each
                feature (one fact per feature);
- invented      features from the vocabulary the listing lacks; other neighbourhoods; numbers in a role that
                contradicts the facts ("3-bed" for a 2-bed); digit numbers that are none of the listing's numbers;
- garbled       the invented numbers that fuse or move facts rather than make one up: a fact's number in another
                fact's role ("1030 baths" for a 1,030 sq ft home), a fact's number under a unit no fact has ("17
                days a month" for a 17-minute walk; also invented: it claims something the facts do not say), or a
                number that contains or is contained in a fact's number ("2910 sq ft" for 910). A subset of
                `invented`, reported apart;
- hype          hype terms (whole words, case-insensitive; urgency such as "act fast" too) and exclamation marks;
- hedges        hedging phrases (informational, lightly penalised: an over-hedged answer reads as unsure);
- length        words; under `min_words` or over `max_words` is flagged;
- repetition    share of the answer's word 3-grams that repeat an earlier one (0 = none; a looping answer -> 1);
- truncated     the answer was cut by the length limit (finish_reason "length": it never ended), when known.

The scalar used for pairwise comparisons (higher is better), with the weights in `JudgeConfig`:

    score = coverage − w_invented·(#invented) − w_hype·(#hype terms + #'!') − w_hedge·(#hedges) − w_length·[length off]
            − w_repetition·repetition − w_truncated·[truncated]

Degeneration is in the score because a small model can cover every fact by restating them in a loop until the
length limit: without the last two terms such an answer outscores a short, complete one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.text import repetition
from training.listings import ALL_FEATURES, HYPE_TERMS, NEIGHBOURHOODS, stated_facts

_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10}
_NUM = r"(?<![\w.])(\d[\d,]*(?:\.\d+)?|" + "|".join(_WORDS) + r")"
_DIGITS = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?!\w)")
# (fact key, pattern whose group 1 is the stated number)
_ROLES = [
    ("beds", re.compile(_NUM + r"[\s-]*(?:bed(?:room)?s?\b|bd\b|br\b)", re.I)),
    ("baths", re.compile(_NUM + r"[\s-]*(?:full\s+)?(?:bath(?:room)?s?\b|ba\b)", re.I)),
    ("area_sqft", re.compile(r"(\d[\d,]*)\s*(?:sq\.?\s*ft\.?|square[\s-]+feet|sqft|sf\b)", re.I)),
    ("transit_minutes", re.compile(_NUM + r"[\s-]*min(?:ute)?s?\b", re.I)),
    ("monthly_fee", re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")),
    ("year_built", re.compile(r"(?:built|constructed|dating):?\s+(?:in\s+|from\s+)?(\d{4})\b", re.I)),
]
# Units no listing fact is stated in: a fact's number before one of them has left its fact ("17 days", "2 years").
_FOREIGN_UNIT = re.compile(r"(?<![\w.$])(\d[\d,]*(?:\.\d+)?)[\s-]*(days?|weeks?|months?|years?|hours?|floors?|"
                           r"stor(?:ey|ie|y)s?|acres?|miles?)\b", re.I)
HEDGES = ["may ", "might ", "possibly", "perhaps", "appears to", "seems to", "it seems", "cannot verify",
          "can't verify", "cannot guarantee", "can't guarantee", "not guaranteed", "reportedly", "allegedly",
          "i think", "i believe", "please verify", "please note", "we recommend", "you should verify",
          "consult a", "do your own", "to the best of"]


@dataclass(frozen=True)
class JudgeConfig:
    min_words: int = 20
    max_words: int = 160
    w_invented: float = 0.25
    w_hype: float = 0.1
    w_hedge: float = 0.05
    w_length: float = 0.1
    w_repetition: float = 1.0
    w_truncated: float = 0.5
    tie_tolerance: float = 1e-9  # |score_a − score_b| at or below this is a tie


@dataclass(frozen=True)
class Verdict:
    covered: tuple[str, ...]
    missing: tuple[str, ...]
    invented: tuple[str, ...]
    hype_terms: tuple[str, ...]
    exclamations: int
    hedges: tuple[str, ...]
    words: int
    length_ok: bool
    score: float = field(default=0.0)
    repetition: float = field(default=0.0)
    garbled: tuple[str, ...] = ()
    truncated: bool | None = None  # None: the finish reason was not known

    @property
    def coverage(self) -> float:
        total = len(self.covered) + len(self.missing)
        return len(self.covered) / total if total else 0.0

    @property
    def has_hype(self) -> bool:
        return bool(self.hype_terms) or self.exclamations > 0

    @property
    def has_invented(self) -> bool:
        return bool(self.invented)

    def to_dict(self) -> dict:
        return {"score": self.score, "coverage": self.coverage, "covered": list(self.covered),
                "missing": list(self.missing), "invented": list(self.invented), "hype_terms": list(self.hype_terms),
                "exclamations": self.exclamations, "hedges": list(self.hedges), "words": self.words,
                "length_ok": self.length_ok, "repetition": self.repetition, "garbled": list(self.garbled),
                "truncated": self.truncated}


def _number(token: str) -> float:
    token = token.lower()
    return float(_WORDS[token]) if token in _WORDS else float(token.replace(",", ""))


def _has_phrase(lower: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", lower) is not None


def _stated(text: str, key: str) -> list[float]:
    pattern = dict(_ROLES)[key]
    return [_number(m.group(1)) for m in pattern.finditer(text)]


def allowed_numbers(facts: dict) -> set[float]:
    """Every number the listing itself supports (its numeric facts and digits inside its phrases)."""
    facts = stated_facts(facts)
    values = {float(facts[k]) for k in ("beds", "baths", "area_sqft", "transit_minutes", "year_built", "monthly_fee")
              if facts.get(k) is not None}
    for phrase in (facts["transit"], facts["condition"], *facts["features"]):
        values.update(_number(m) for m in re.findall(r"\d[\d,]*(?:\.\d+)?", phrase or ""))
    return values


def _transit_line(transit: str) -> str:
    """'a 4-minute walk to the Green Line' -> 'Green Line'."""
    line = re.sub(r"^.*?\bto\s+", "", transit)
    return re.sub(r"^the\s+", "", line, flags=re.I)


def _coverage(text: str, lower: str, facts: dict) -> tuple[list[str], list[str]]:
    checks: dict[str, bool] = {}
    checks["property_type"] = re.search(rf"\b{re.escape(facts['property_type'])}s?\b", lower) is not None
    beds = _stated(text, "beds")
    checks["beds"] = float(facts["beds"]) in beds or (facts["beds"] == 0 and "studio" in lower)
    checks["baths"] = float(facts["baths"]) in _stated(text, "baths") or (
        facts["baths"] == 1.5 and re.search(r"(one|1) and a half bath", lower) is not None)
    numbers = {_number(t) for t in _DIGITS.findall(text)}
    if facts["area_sqft"] is not None:
        checks["area_sqft"] = float(facts["area_sqft"]) in numbers
    checks["neighbourhood"] = _has_phrase(lower, re.sub(r"^the\s+", "", facts["neighbourhood"], flags=re.I))
    if facts["transit"] is not None:
        checks["transit"] = _has_phrase(lower, _transit_line(facts["transit"]))
        checks["transit_minutes"] = float(facts["transit_minutes"]) in _stated(text, "transit_minutes")
    if facts.get("monthly_fee") is not None:
        checks["monthly_fee"] = float(facts["monthly_fee"]) in numbers
    if facts["year_built"] is not None:
        checks["year_built"] = float(facts["year_built"]) in numbers
    if facts["condition"] is not None:
        checks["condition"] = _has_phrase(lower, facts["condition"])
    for feature in facts["features"]:
        checks[f"feature:{feature}"] = _has_phrase(lower, feature)
    return [k for k, ok in checks.items() if ok], [k for k, ok in checks.items() if not ok]


def _invented(text: str, lower: str, facts: dict) -> tuple[list[str], list[str]]:
    """(invented, garbled): everything claimed beyond the facts, and the part of it that fuses or moves facts."""
    own = {f.lower() for f in facts["features"]}
    found = [f"feature:{f}" for f in ALL_FEATURES if f.lower() not in own and _has_phrase(lower, f)]
    found += [f"neighbourhood:{p}" for p in NEIGHBOURHOODS
              if p.lower() != facts["neighbourhood"].lower() and _has_phrase(lower, p)
              and not _has_phrase(facts["neighbourhood"].lower(), p)]
    allowed = allowed_numbers(facts)
    garbled = []
    for key, _ in _ROLES:
        expected = facts.get(key)
        for value in _stated(text, key):
            if expected is None or value != float(expected):
                found.append(f"{key}:{value:g} (facts: {expected})")
                if value in allowed:  # another fact's number in this role
                    garbled.append(found[-1])
    for tok in _DIGITS.findall(text):
        if _number(tok) not in allowed:
            found.append(f"number:{tok}")
            if _fuses_a_fact(tok, allowed):
                garbled.append(found[-1])
    for match in _FOREIGN_UNIT.finditer(text):
        if _number(match.group(1)) in allowed:  # (a number from nowhere is already counted above)
            found.append(f"unit:{match.group(1)} {match.group(2).lower()}")
            garbled.append(found[-1])
    return found, garbled


def _fuses_a_fact(token: str, allowed: set[float]) -> bool:
    """Does the digit string `token` contain, or sit inside, the digits of a fact's number of two or more digits?"""
    digits = token.replace(",", "").split(".")[0]
    for value in allowed:
        fact = f"{value:g}".split(".")[0]
        if len(fact) >= 2 and len(digits) >= 2 and (fact in digits or digits in fact):
            return True
    return False


def judge_listing(text: str, facts: dict, config: JudgeConfig = JudgeConfig(),
                  finish_reason: str | None = None) -> Verdict:
    """Judge one description `text` against the listing `facts` (the dict from `Listing.facts()`). `finish_reason`
    is the engine's ("stop", "length"); None when unknown, which scores as not truncated."""
    facts = stated_facts(facts)
    lower = text.lower()
    covered, missing = _coverage(text, lower, facts)
    invented, garbled = _invented(text, lower, facts)
    hype = [t for t in HYPE_TERMS for _ in re.finditer(rf"(?<!\w){re.escape(t)}(?!\w)", lower)]
    exclamations = text.count("!")
    hedges = [h for h in HEDGES if h in lower + " "]
    words = len(text.split())
    length_ok = config.min_words <= words <= config.max_words
    partial = Verdict(tuple(covered), tuple(missing), tuple(invented), tuple(hype), exclamations, tuple(hedges),
                      words, length_ok)
    repeated = repetition(text)
    truncated = None if finish_reason is None else finish_reason == "length"
    score = (partial.coverage - config.w_invented * len(invented) - config.w_hype * (len(hype) + exclamations)
             - config.w_hedge * len(hedges) - config.w_length * (not length_ok)
             - config.w_repetition * repeated - config.w_truncated * bool(truncated))
    return Verdict(tuple(covered), tuple(missing), tuple(invented), tuple(hype), exclamations, tuple(hedges),
                   words, length_ok, score, repeated, tuple(garbled), truncated)


def prefer(a: Verdict, b: Verdict, config: JudgeConfig = JudgeConfig()) -> str:
    """'A' when `a` scores higher, 'B' when `b` does, 'tie' within `config.tie_tolerance`."""
    if abs(a.score - b.score) <= config.tie_tolerance:
        return "tie"
    return "A" if a.score > b.score else "B"

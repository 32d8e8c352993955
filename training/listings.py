"""Listing facts: the structured ground truth behind the demo dataset (and behind the evaluation judge).

A `Listing` is a fictional property for sale. `generate_listings(seed, n)` draws `n` distinct listings,
deterministically from `seed` (same seed, same listings, on every machine: only `random.Random` is used).

Contract relied on by `eval/` (keep stable):

- `Listing.facts()` returns exactly the keys id, property_type, beds, baths, area_sqft, neighbourhood, transit,
  transit_minutes, features, monthly_fee, year_built, condition.
- `ALL_FEATURES` is the whole feature vocabulary: a description that names a feature from it that is not in the
  listing's `features` has invented one. No feature is a substring of another, so substring matching is safe.
- `HYPE_TERMS` are the lower-case hype words and phrases the "hype" near-miss uses.
- A listing may state only some of its facts (`Listing.partial`, as people often do when they ask): the keys of
  `OPTIONAL_FACTS` it leaves out are listed in `facts()["unstated"]` (absent when every fact is stated), and
  `stated_facts(facts)` turns them into None: a description may not claim them, and need not cover them.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict, dataclass, field

# Feature vocabulary, grouped by where a feature is plausible. ALL_FEATURES is their union.
_SHARED_FEATURES = [
    "in-unit laundry",
    "hardwood floors",
    "floor-to-ceiling windows",
    "central air conditioning",
    "walk-in closet",
    "dishwasher",
    "gas fireplace",
    "quartz countertops",
    "stainless steel appliances",
    "heated bathroom floors",
    "home office nook",
    "south-facing windows",
    "heat pump",
    "private balcony",
]
_BUILDING_FEATURES = [  # condo, apartment, loft
    "covered parking spot",
    "storage locker",
    "bike room",
    "fitness room",
    "concierge desk",
    "rooftop terrace",
    "shared courtyard",
    "elevator access",
]
_LOFT_FEATURES = ["exposed brick", "high ceilings", "skylights", "open-plan kitchen"]
_GROUND_FEATURES = [  # house, townhouse
    "fenced backyard",
    "attached garage",
    "finished basement",
    "front porch",
    "vegetable garden",
    "solar panels",
    "driveway parking",
    "mudroom",
]

ALL_FEATURES: list[str] = sorted(set(_SHARED_FEATURES + _BUILDING_FEATURES + _LOFT_FEATURES + _GROUND_FEATURES))

HYPE_TERMS: list[str] = [
    "amazing",
    "once-in-a-lifetime",
    "stunning",
    "dream home",
    "must see",
    "must-see",
    "incredible",
    "breathtaking",
    "jaw-dropping",
    "luxurious",
    "spectacular",
    "won't last",
    "unbelievable",
    "paradise",
    "perfect in every way",
    "best deal",
    # urgency: pressure on the reader, not a fact about the home ("act fast" passed the judge on a rewrite)
    "act fast",
    "act now",
    "hurry",
    "don't miss",
    "book your showing now",
    "wow",
]

NEIGHBOURHOODS = [
    "Riverside", "Old Town", "Maple Heights", "Harbourfront", "Cedar Park", "Northgate", "Elm Hill",
    "the Junction", "Westbrook", "Lakeview", "Millbrook", "Queen's Landing", "Ashford", "Fairmount",
    "Willow Creek", "Stonebridge", "Eastview", "Birchwood", "Kingsway", "Southpoint",
]

TRANSIT_LINES = [
    "the Green Line", "the Blue Line", "the Red Line", "the Orange Line", "the 14 bus", "the 52 express bus",
    "the harbour ferry", "the King Street streetcar", "Central Station", "the commuter rail",
]

CONDITIONS = [
    "newly renovated",
    "well maintained",
    "move-in ready",
    "recently repainted",
    "original but well kept",
    "in need of some updating",
    "fully updated in 2021",
    "freshly refinished",
]

# property_type -> (beds range, baths choices, sqft per bed range, year range, has monthly fee, feature pools)
_TYPES: dict[str, tuple] = {
    "condo": ((0, 3), [1.0, 1.5, 2.0, 2.5], (380, 560), (1975, 2024), True, (_SHARED_FEATURES, _BUILDING_FEATURES)),
    "apartment": ((0, 3), [1.0, 1.5, 2.0], (350, 520), (1910, 2022), True, (_SHARED_FEATURES, _BUILDING_FEATURES)),
    "loft": ((0, 2), [1.0, 1.5, 2.0], (520, 780), (1900, 2015), True, (_SHARED_FEATURES, _BUILDING_FEATURES, _LOFT_FEATURES)),
    "townhouse": ((2, 4), [1.5, 2.0, 2.5, 3.0], (420, 600), (1960, 2024), True, (_SHARED_FEATURES, _GROUND_FEATURES)),
    "house": ((2, 5), [1.0, 1.5, 2.0, 2.5, 3.0, 3.5], (450, 700), (1905, 2024), False, (_SHARED_FEATURES, _GROUND_FEATURES)),
}
PROPERTY_TYPES: list[str] = list(_TYPES)


@dataclass(frozen=True)
class Listing:
    """One fictional property. Field names are the keys of `facts()`; `features` keeps its drawing order."""

    id: str
    property_type: str
    beds: int
    baths: float
    area_sqft: int
    neighbourhood: str
    transit: str
    transit_minutes: int
    features: tuple[str, ...] = field(default_factory=tuple)
    monthly_fee: int | None = None
    year_built: int = 2000
    condition: str = "well maintained"

    # Optional facts (keys of OPTIONAL_FACTS) this listing does not state; see `partial`.
    unstated: tuple[str, ...] = ()

    def facts(self) -> dict:
        """The listing as a plain JSON-ready dict (features as a list; `unstated` only when non-empty)."""
        data = asdict(self)
        data["features"] = list(self.features)
        if data["unstated"]:
            data["unstated"] = list(self.unstated)
        else:
            del data["unstated"]
        return data

    @classmethod
    def from_facts(cls, facts: dict) -> "Listing":
        """Inverse of `facts()`."""
        data = dict(facts)
        data["features"] = tuple(data.get("features", ()))
        data["unstated"] = tuple(data.get("unstated", ()))
        return cls(**data)

    def states(self, key: str) -> bool:
        """Does this listing state fact `key` (an OPTIONAL_FACTS key; every other fact is always stated)?"""
        return key not in self.unstated

    def partial(self, keep: set[str] | frozenset[str], features: tuple[str, ...]) -> "Listing":
        """The same property with only the optional facts in `keep` stated and only `features` listed: what a person
        who types a few facts gives. Unstated values stay in the record but `stated_facts` hides them."""
        unknown = set(keep) - set(OPTIONAL_FACTS)
        if unknown or not features or not set(features) <= set(self.features):
            raise ValueError(f"bad partial listing: keep={sorted(keep)} features={features}")
        return dataclasses.replace(self, features=tuple(features),
                                   unstated=tuple(k for k in OPTIONAL_FACTS if k not in keep))

    def _identity(self) -> tuple:
        return (self.property_type, self.beds, self.baths, self.area_sqft, self.neighbourhood, self.transit,
                tuple(sorted(self.features)), self.monthly_fee, self.year_built, self.condition)


# Facts a prompt may leave out (property type, beds, baths, neighbourhood and at least one feature are always given).
# "transit" covers transit_minutes too.
OPTIONAL_FACTS: tuple[str, ...] = ("area_sqft", "transit", "monthly_fee", "year_built", "condition")
_DEPENDENT = {"transit": ("transit", "transit_minutes")}


def stated_facts(facts: dict) -> dict:
    """`facts` with every unstated fact set to None (transit_minutes with transit): what a description may use."""
    out = dict(facts)
    for key in facts.get("unstated", ()):
        for dependent in _DEPENDENT.get(key, (key,)):
            out[dependent] = None
    return out


def transit_phrase(minutes: int, line: str) -> str:
    """'a 4-minute walk to the Green Line' - the canonical `transit` fact."""
    return f"a {minutes}-minute walk to {line}"


def _draw(rng: random.Random, index: int, seed: int) -> Listing:
    property_type = rng.choice(PROPERTY_TYPES)
    (bed_lo, bed_hi), bath_choices, (per_lo, per_hi), (year_lo, year_hi), has_fee, pools = _TYPES[property_type]
    beds = rng.randint(bed_lo, bed_hi)
    baths = rng.choice([b for b in bath_choices if b <= max(1.0, beds + 0.5)])
    area = int(round((max(beds, 1) * rng.randint(per_lo, per_hi) + rng.randint(0, 180)) / 10.0) * 10)
    minutes = rng.randint(2, 18)
    line = rng.choice(TRANSIT_LINES)
    pool = sorted({f for group in pools for f in group})
    features = tuple(rng.sample(pool, rng.randint(2, 5)))
    fee = int(round(rng.randint(180, 900) / 5.0) * 5) if has_fee else None
    return Listing(
        id=f"L{seed}-{index:04d}",
        property_type=property_type,
        beds=beds,
        baths=baths,
        area_sqft=area,
        neighbourhood=rng.choice(NEIGHBOURHOODS),
        transit=transit_phrase(minutes, line),
        transit_minutes=minutes,
        features=features,
        monthly_fee=fee,
        year_built=rng.randint(year_lo, year_hi),
        condition=rng.choice(CONDITIONS),
    )


def generate_listings(seed: int = 0, n: int = 800) -> list[Listing]:
    """`n` distinct listings drawn deterministically from `seed`; ids are `L<seed>-<index>`."""
    rng = random.Random(seed)
    listings: list[Listing] = []
    seen: set[tuple] = set()
    while len(listings) < n:
        candidate = _draw(rng, len(listings), seed)
        if candidate._identity() in seen:
            continue
        seen.add(candidate._identity())
        listings.append(candidate)
    return listings

"""Pure arena rules: which pair fights next, who sits on which side, and which answers get flagged.

No I/O here, so the rules are tested directly and the service stays thin.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Mapping, Sequence


def choose_pair(contestants: Sequence[str], load: Mapping[frozenset[str], int], rng: random.Random) -> tuple[str, str]:
    """Pick the unordered pair with the fewest battles in `load` (ties broken at random), then assign sides at
    random: returns (side A, side B). Needs at least two distinct contestants."""
    distinct = sorted(set(contestants))
    if len(distinct) < 2:
        raise ValueError("a battle needs at least two distinct contestants")
    pairs = list(itertools.combinations(distinct, 2))
    fewest = min(load.get(frozenset(p), 0) for p in pairs)
    left, right = rng.choice([p for p in pairs if load.get(frozenset(p), 0) == fewest])
    return (left, right) if rng.random() < 0.5 else (right, left)


def identity_terms(served_id: str, adapter_name: str | None, content_hash: str | None,
                   extra: Iterable[str] = ()) -> list[str]:
    """Strings that would reveal a contestant if an answer contained them: the adapter's name, its name@version,
    a 12-character content-hash prefix, plus configured extras (e.g. 'base model' for the base)."""
    terms = [served_id] if served_id != "base" else []
    if adapter_name:
        terms.append(adapter_name)
    if content_hash:
        terms.append(content_hash[:12])
    terms.extend(extra)
    return sorted({t for t in terms if t and t.strip()})


def contains_identity(text: str, terms: Iterable[str]) -> bool:
    """True when `text` contains any term as a whole word (case-insensitive): 'sft' matches 'I am SFT.' but not
    'softer'."""
    for term in terms:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(term)}(?![A-Za-z0-9])", text, flags=re.IGNORECASE):
            return True
    return False


def side_flags(text: str, finish_reason: str | None, terms: Iterable[str]) -> list[str]:
    """Flags of one finished side: 'error', 'truncated' (finish_reason length), 'empty', 'identity_leak'."""
    flags = []
    if finish_reason == "error":
        flags.append("error")
    if finish_reason == "length":
        flags.append("truncated")
    if finish_reason != "error" and not text.strip():
        flags.append("empty")
    if text and contains_identity(text, terms):
        flags.append("identity_leak")
    return flags

"""Text measures shared by the training checks and the evaluation."""

from __future__ import annotations

import re


def repetition(text: str, n: int = 3) -> float:
    """Share of the word n-grams of `text` that already occurred earlier in it (lower-cased, punctuation ignored):
    0 for an answer that never repeats itself, towards 1 for one that loops."""
    words = re.findall(r"[\w$']+", text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)

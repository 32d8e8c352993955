"""Word-level differences between answers, as HTML: words of `other` that are not in `reference` are marked."""

from __future__ import annotations

import difflib
import html


def word_diff_html(reference: str, other: str) -> str:
    """`other` with its inserted or changed words in <ins> and the reference's missing words in <del>."""
    ref_words, other_words = reference.split(), other.split()
    parts = []
    matcher = difflib.SequenceMatcher(a=ref_words, b=other_words, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            parts.append(html.escape(" ".join(other_words[b0:b1])))
            continue
        if a1 > a0:
            parts.append(f"<del>{html.escape(' '.join(ref_words[a0:a1]))}</del>")
        if b1 > b0:
            parts.append(f"<ins>{html.escape(' '.join(other_words[b0:b1]))}</ins>")
    return " ".join(p for p in parts if p)


def diff_panel_html(names: list[str], texts: list[str]) -> str:
    """One block per model after the first, each diffed against the first model's answer."""
    if len(texts) < 2:
        return ""
    blocks = [f"<p><b>Differences against {html.escape(names[0])}</b> (<ins>added</ins>, <del>missing</del>)</p>"]
    for name, text in zip(names[1:], texts[1:]):
        blocks.append(f"<div class='palate-diff'><b>{html.escape(name)}:</b> {word_diff_html(texts[0], text)}</div>")
    return "\n".join(blocks)

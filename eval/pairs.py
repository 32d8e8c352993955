"""Preference pairs for evaluation: read TRL-format JSONL and tokenize exactly as TRL's DPOTrainer does.

Tokenization (trl 1.16 `DPOTrainer._prepare_dataset.tokenize_fn`, conversational branch), used by *every* scoring
path (vLLM engine and transformers + PEFT) so that the numbers are comparable with each other and with training:

    prompt_ids          = apply_chat_template(prompt, add_generation_prompt=True)
    prompt_chosen_ids   = apply_chat_template(prompt + chosen)
    prompt_rejected_ids = apply_chat_template(prompt + rejected)
    k                   = min(common_prefix(prompt_ids, prompt_chosen_ids), common_prefix(prompt_ids, prompt_rejected_ids))
    completion          = prompt_*_ids[k:]

So a completion is the assistant's content followed by the end-of-turn tokens the template renders after it (for
SmolLM2's ChatML template: `<|im_end|>` and a newline). Scoring the end-of-turn token matters: it is how the model
says "I am done", and DPO trained on it. Plain-text rows (prompt/chosen/rejected as strings) get the tokenizer's EOS
appended to each answer, again as TRL does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PreferenceRow:
    """One preference pair as stored: messages (or strings), the near-miss kind and the listing facts if any."""

    pair_id: str
    prompt: Any
    chosen: Any
    rejected: Any
    kind: str = "unknown"
    listing: dict | None = None


@dataclass(frozen=True)
class TokenizedPair:
    pair_id: str
    kind: str
    prompt_ids: list[int] = field(repr=False)
    chosen_ids: list[int] = field(repr=False)
    rejected_ids: list[int] = field(repr=False)


def file_sha256(path: Path | str) -> str:
    """Hash of a data file, recorded next to every number computed from it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _split_implicit_prompt(row: dict) -> dict:
    # TRL's extract_prompt: chosen/rejected are full conversations sharing a prefix, which is the prompt.
    from trl.data_utils import extract_prompt

    return extract_prompt(row)


def read_pairs(path: Path | str, limit: int | None = None, kinds: set[str] | None = None) -> list[PreferenceRow]:
    """Read a preference JSONL file (TRL explicit- or implicit-prompt format). Rows keep their file order; a row
    without an "id" is named by its line number. `kinds` keeps only those near-miss kinds; `limit` the first N."""
    rows: list[PreferenceRow] = []
    path = Path(path)
    with path.open() as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not JSON: {exc}") from None
            if "chosen" not in data or "rejected" not in data:
                raise ValueError(f"{path}:{line_no}: a preference row needs 'chosen' and 'rejected'")
            if "prompt" not in data:
                data = _split_implicit_prompt(data)
            kind = str(data.get("kind") or "unknown")
            if kinds and kind not in kinds:
                continue
            rows.append(PreferenceRow(
                pair_id=str(data.get("id") or f"{path.stem}:{line_no}"),
                prompt=data["prompt"], chosen=data["chosen"], rejected=data["rejected"],
                kind=kind, listing=data.get("listing"),
            ))
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise ValueError(f"{path}: no preference pairs" + (f" of kinds {sorted(kinds)}" if kinds else ""))
    return rows


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _ids(tokenizer: Any, messages: list[dict], **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def tokenize_pair(tokenizer: Any, row: PreferenceRow) -> TokenizedPair:
    """Token ids of prompt, chosen and rejected completion, split the way TRL 1.16 splits them (module docstring)."""
    if isinstance(row.prompt, list):
        prompt_ids = _ids(tokenizer, row.prompt, add_generation_prompt=True)
        with_chosen = _ids(tokenizer, row.prompt + row.chosen)
        with_rejected = _ids(tokenizer, row.prompt + row.rejected)
    else:
        eos = tokenizer.eos_token
        chosen = row.chosen if row.chosen.endswith(eos) else row.chosen + eos
        rejected = row.rejected if row.rejected.endswith(eos) else row.rejected + eos
        prompt_ids = list(tokenizer(text=row.prompt)["input_ids"])
        with_chosen = list(tokenizer(text=row.prompt + chosen)["input_ids"])
        with_rejected = list(tokenizer(text=row.prompt + rejected)["input_ids"])
    k = min(common_prefix_length(prompt_ids, with_chosen), common_prefix_length(prompt_ids, with_rejected))
    pair = TokenizedPair(row.pair_id, row.kind, prompt_ids[:k], with_chosen[k:], with_rejected[k:])
    if not pair.chosen_ids or not pair.rejected_ids:
        raise ValueError(f"pair {row.pair_id}: an empty completion after tokenization")
    return pair



"""On-policy rejections for DPO: the parent adapter's own mistakes as the rejected answers.

The demo dataset's rejected answers are written near-misses (hype, vague, an invented feature, a wrong number ...).
An SFT adapter soon stops making most of them - it never hypes - so DPO on those pairs alone has little left to
teach it. What the SFT adapter does get wrong, at the arena's sampling, is its own kind of mistake: it drops facts,
fuses numbers ("17-bed" for a 17-minute walk) and sometimes never ends. `on_policy_rows: N` makes DPO push down
exactly those answers, as in SPIN (Chen et al., 2024, "Self-Play Fine-Tuning"): chosen = the dataset's grounded
answer, rejected = the model's own sample.

    for the first N training rows, in the order they are trained:
        answer = sample from the parent (temperature, top_p, max_tokens: configs/arena.yaml), seed = trl seed + row
        if grounding_problems(answer) or missing_facts(answer) or the answer was cut by the length limit:
            row.rejected = answer          (the row's chosen answer stays)
        else:
            the row keeps its written near-miss

The check is the dataset's own (`training/grounding.py`), not the evaluation's listing judge, and it needs the
row's `listing` facts (the demo dataset has them; a row without them keeps its pair). Rows of the held-out phrasing
families are never in the training file, so the evaluation still measures wordings no adapter saw.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.grounding import grounding_problems, missing_facts

BATCH = 16  # prompts sampled together (left-padded)
ON_POLICY_FILE = "on_policy.jsonl"  # the sampled answers and why each was rejected (run dir, then the registry)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int

    @classmethod
    def arena(cls) -> "Sampling":
        from core.arena_config import load_arena_config

        arena = load_arena_config()
        return cls(arena.temperature, arena.top_p, arena.default_max_tokens)


def why_rejected(text: str, facts: dict | None, cut: bool) -> list[str]:
    """The reasons an answer is worse than a grounded, complete one (empty: nothing wrong found, or no facts)."""
    if not facts:
        return []
    reasons = ["cut by the length limit"] if cut else []
    return reasons + grounding_problems(text, facts) + [f"missing {m}" for m in missing_facts(text, facts)]


def sample_answers(model, tokenizer, prompts: list[list[dict]], sampling: Sampling, seed: int) -> list[tuple[str, bool]]:
    """(answer, cut by the length limit) per chat prompt, sampled from `model` as it is now."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    out: list[tuple[str, bool]] = []
    try:
        for start in range(0, len(prompts), BATCH):
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[start:start + BATCH]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(seed + start)
            with torch.no_grad():
                ids = model.generate(**batch, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                     max_new_tokens=sampling.max_tokens, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
            for row in ids[:, batch["input_ids"].shape[1]:].tolist():
                ended = tokenizer.eos_token_id in row
                row = row[:row.index(tokenizer.eos_token_id)] if ended else row
                out.append((tokenizer.decode(row, skip_special_tokens=True).strip(), not ended))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def with_on_policy_rejections(model, tokenizer, rows: list[dict], facts: list[dict | None], n: int,
                              sampling: Sampling, seed: int, cache: Path, log=print) -> tuple[list[dict], dict]:
    """`rows` with the first `n` rows' rejected answers replaced by the model's own worse answers, and a summary.
    The replaced pairs are kept in `cache` (JSONL), which a resumed job reads instead of sampling again."""
    n = min(n, len(rows))
    if cache.is_file():
        records = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
        log(f"on-policy rejections: {len(records)} sampled answers read from {cache}")
    else:
        log(f"on-policy rejections: sampling the parent's answers to {n} training prompts "
            f"(temperature {sampling.temperature}, top_p {sampling.top_p}, {sampling.max_tokens} tokens) ...")
        answers = sample_answers(model, tokenizer, [row["prompt"] for row in rows[:n]], sampling, seed)
        records = [{"row": i, "answer": text, "cut": cut, "reasons": why_rejected(text, facts[i], cut)}
                   for i, (text, cut) in enumerate(answers)]
        cache.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = list(rows)
    for record in records:
        if record["reasons"]:
            row = dict(out[record["row"]])
            row["rejected"] = [{"role": "assistant", "content": record["answer"]}]
            out[record["row"]] = row
    replaced = [r for r in records if r["reasons"]]
    kinds = Counter(reason.split(":")[0].split(" ")[0] for r in replaced for reason in r["reasons"])
    summary = {"sampled": len(records), "replaced": len(replaced), "kept_written": len(records) - len(replaced),
               "cut_by_length": sum(r["cut"] for r in records), "reasons": dict(sorted(kinds.items())),
               "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                            "max_tokens": sampling.max_tokens}}
    log(f"on-policy rejections: {summary['replaced']} of {summary['sampled']} rows now reject the parent's own answer "
        f"({summary['kept_written']} answers had nothing wrong and keep the written near-miss; reasons {kinds})")
    return out, summary

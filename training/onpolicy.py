"""On-policy pairs for DPO: the parent adapter's own answers, a right one over a wrong one.

The demo dataset's rejected answers are written near-misses (hype, vague, an invented feature, a wrong number ...).
An SFT adapter soon stops making most of them - it never hypes - so DPO on those pairs alone has little left to
teach it. What the SFT adapter does get wrong, at the arena's sampling, is its own kind of mistake: it fuses and
moves numbers ("17-bed" for a 17-minute walk), makes some up ("a 5-year lease") and sometimes never ends.
`on_policy_rows: N` makes DPO push down exactly those answers:

    for the first N training rows, in the order they are trained:
        answers = K samples from the parent (temperature, top_p, max_tokens: configs/arena.yaml; K = on_policy_samples)
        reasons(answer) = grounding_problems + missing facts + "cut by the length limit"     (training/grounding.py)
                          + "repeats itself" (over MAX_REPETITION of its word 3-grams repeat, core/text.py)
        wrong(answer)   = any reason other than a missing fact (something false, a restatement, or it never ended)
        on_policy_chosen "sample":  chosen   = a right answer, the one leaving the fewest facts out
                                    rejected = a wrong answer leaving out at least as many facts (else
                                               the pair would teach "say less"), the one with the most reasons
                                    (no right or no wrong answer among the K: the row keeps its written pair)
                                    with on_policy_complete: a row without such a pair whose right answers
                                    cover different numbers of facts pairs the most complete over the least
        on_policy_chosen "dataset": chosen stays the dataset's; rejected = the answer with the most reasons, if any
                                    (SPIN, Chen et al., 2024, "Self-Play Fine-Tuning")

"sample" pairs differ in the mistake, not in who wrote them, so the DPO gradient lands on the wrong number rather
than on the parent's wording; "dataset" pairs differ in every token, and measured they moved the numbers rather
than fixed them (README, "What made the adapters loop"). The check is the dataset's own (`training/grounding.py`),
not the evaluation's listing judge, and it needs the row's `listing` facts (the demo dataset has them; a row
without them keeps its pair). Rows of the held-out phrasing families are never in the training file, so the
evaluation still measures wordings no adapter saw.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.text import repetition
from training.grounding import grounding_problems, missing_facts

# An answer whose word 3-grams repeat more than this restates itself ("... mudroom and south-facing windows. You are
# a 2-bed, 2-bath townhouse in Riverside, ... mudroom and south-facing windows."): wrong, like a false number. No
# written answer of the demo dataset repeats any 3-gram; one repeated 3-gram in a 40-word answer is 0.03. Measured
# (README, "Restating answers are wrong"): at 0.1 dpo still repeated more than sft (0.028 against 0.024), at 0.05 less.
MAX_REPETITION = 0.05
BATCH = 64  # prompts sampled together (an answer leaves the batch when it ends: benchmarks/onpolicy_sampling.py)
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
    repeated = repetition(text)
    if repeated > MAX_REPETITION:
        reasons.append(f"repeats itself: {repeated:.2f} of its word 3-grams")
    return reasons + grounding_problems(text, facts) + [f"missing {m}" for m in missing_facts(text, facts)]


def is_wrong(reasons: list[str]) -> bool:
    """Does the answer state something false, restate itself or never end? (Leaving a fact out is not wrong, only
    less complete.)"""
    return any(not reason.startswith("missing ") for reason in reasons)


def pick_pair(samples: list[dict], chosen_from: str, complete: bool = False) -> tuple[int | None, int | None]:
    """(chosen, rejected) sample indices for one row; None where the row keeps its written answer.

    chosen_from "dataset": no sampled chosen; rejected = the sample with the most reasons (missing facts count).
    chosen_from "sample": chosen = a sample with nothing wrong (fewest missing facts), rejected = a wrong sample
    that covers no more facts (most reasons); both or neither, so the pair differs in the mistake and not in who
    wrote it or how much it says. With `complete`, a row without such a pair whose right answers cover different
    numbers of facts pairs the most complete right answer over the least complete one: nothing false on either
    side, so the pair differs in the facts left out."""
    def most_reasons(indices):
        return max(indices, key=lambda i: len(samples[i]["reasons"]), default=None)

    if chosen_from == "dataset":
        return None, most_reasons([i for i, s in enumerate(samples) if s["reasons"]])
    right = [i for i, s in enumerate(samples) if not is_wrong(s["reasons"])]
    if not right:
        return None, None
    chosen = min(right, key=lambda i: len(samples[i]["reasons"]))
    # A wrong answer that also states more than the chosen one would teach "say less": pair only those that cover
    # no more facts than the chosen answer, so the pair differs in the mistake.
    missing = _missing(samples[chosen])
    wrong = [i for i, s in enumerate(samples) if is_wrong(s["reasons"]) and _missing(s) >= missing]
    if wrong:
        return chosen, most_reasons(wrong)
    less_complete = max(right, key=lambda i: _missing(samples[i]))
    return (chosen, less_complete) if complete and _missing(samples[less_complete]) > missing else (None, None)


def _missing(sample: dict) -> int:
    return sum(reason.startswith("missing ") for reason in sample["reasons"])


def sampler(model_dir: Path, adapter_dir: Path, dtype: str, device="cpu"):
    """The parent adapter merged into a copy of the base model in `dtype`, for sampling only (the trained model stays
    as it is). Merged bf16 on an AVX-512 BF16 host samples 2x faster than the unmerged float32 training copy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().to(device)


def sample_answers(model, tokenizer, prompts: list[list[dict]], sampling: Sampling,
                   seed: int) -> list[tuple[str, bool]]:
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
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            torch.manual_seed(seed + start)
            with torch.no_grad():
                answers = _sample_batch(model, batch["input_ids"], batch["attention_mask"], sampling,
                                        tokenizer.eos_token_id)
            for row, ended in answers:
                out.append((tokenizer.decode(row, skip_special_tokens=True).strip(), not ended))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def _sample_batch(model, input_ids, attention_mask, sampling: Sampling, eos: int) -> list[tuple[list[int], bool]]:
    """Sample a left-padded batch the way the arena's engine does (temperature, then nucleus top_p; no top-k), and
    drop each answer from the batch as soon as it ends. (`model.generate` keeps computing an ended answer until the
    longest in its batch ends, and adds top_k 50: here about half its forward passes were for answers already
    over.) Returns (token ids, ended with `eos`) per row, in order."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    rows = torch.arange(input_ids.shape[0])  # which answer each remaining batch row belongs to
    answers: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    ended = [False] * input_ids.shape[0]
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                   past_key_values=cache, use_cache=True).logits[:, -1, :]
    for step in range(sampling.max_tokens):
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
        token = _nucleus(probs, sampling.top_p)
        for row, t in zip(rows.tolist(), token.tolist()):
            if t == eos:
                ended[row] = True
            else:
                answers[row].append(t)
        going = token != eos
        if step == sampling.max_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, attention_mask = rows[keep], token[keep], attention_mask[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
        positions = attention_mask.sum(-1, keepdim=True) - 1
        logits = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
    return list(zip(answers, ended))


def _nucleus(probs, top_p: float):
    """One token per row from the smallest set of most likely tokens whose probability reaches `top_p`."""
    import torch

    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    pick = torch.multinomial(sorted_probs, 1)
    return order.gather(-1, pick).squeeze(-1)


def with_on_policy_rejections(model, tokenizer, rows: list[dict], facts: list[dict | None], n: int,
                              sampling: Sampling, seed: int, cache: Path, log=print, samples: int = 1,
                              chosen_from: str = "dataset", kinds: list[str | None] | None = None,
                              keep_kinds: list[str] = (), complete: bool = False) -> tuple[list[dict], dict]:
    """`rows` with the first `n` rows' pairs rebuilt from `samples` answers of the model each (`pick_pair`), and a
    summary. Rows whose `kinds` entry is in `keep_kinds` keep their written pair and are not sampled. Every sampled
    answer is kept in `cache` (JSONL, one line per answer), which a resumed job reads instead of sampling again."""
    n = min(n, len(rows))
    if cache.is_file():
        records = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
        for record in records:  # judged again: the answers are what sampling cost, the check is today's
            record["reasons"] = why_rejected(record["answer"], facts[record["row"]], record["cut"])
        log(f"on-policy pairs: {len(records)} sampled answers read from {cache} (checked again)")
    else:
        # Only rows with listing facts can be checked: the others (votes exported from the arena) keep their pair,
        # and so do the rows of the kinds to keep.
        kinds = kinds or [None] * len(rows)
        kept = [i for i in range(n) if facts[i] and kinds[i] in keep_kinds]
        judged = [i for i in range(n) if facts[i] and kinds[i] not in keep_kinds]
        if not judged:
            log(f"on-policy pairs: none of the first {n} rows has listing facts to check an answer against and a "
                "kind to sample; they keep their written pairs")
        else:
            log(f"on-policy pairs: sampling {samples} answer(s) of the parent to each of {len(judged)} training "
                f"prompts (the first {n} rows; {n - len(judged) - len(kept)} without listing facts and {len(kept)} "
                f"of the kinds to keep skipped; temperature {sampling.temperature}, top_p {sampling.top_p}, "
                f"{sampling.max_tokens} tokens) ...")
        records = []
        for k in range(samples if judged else 0):
            answers = sample_answers(model, tokenizer, [rows[i]["prompt"] for i in judged], sampling,
                                     seed + k * 100_003)
            records += [{"row": i, "sample": k, "answer": text, "cut": cut,
                         "reasons": why_rejected(text, facts[i], cut)} for i, (text, cut) in zip(judged, answers)]
        cache.write_text("".join(json.dumps(r) + "\n" for r in records))
    by_row: dict[int, list[dict]] = {}
    for record in records:
        by_row.setdefault(record["row"], []).append(record)
    out, changed, used, completeness = list(rows), 0, [], 0
    for i, group in sorted(by_row.items()):
        chosen, rejected = pick_pair(group, chosen_from, complete)
        if rejected is None:
            continue
        row = dict(out[i])
        row["rejected"] = [{"role": "assistant", "content": group[rejected]["answer"]}]
        if chosen is not None:
            row["chosen"] = [{"role": "assistant", "content": group[chosen]["answer"]}]
        out[i], changed = row, changed + 1
        used.append(group[rejected])
        completeness += complete and not is_wrong(group[rejected]["reasons"])  # (a SPIN rejection may only omit)
    wrong = [r for r in records if is_wrong(r["reasons"])]
    kinds = Counter(reason.split(":")[0].split(" ")[0] for r in used for reason in r["reasons"])
    summary = {"sampled": len(records), "rows": len(by_row), "samples_per_row": samples, "chosen_from": chosen_from,
               "keep_kinds": list(keep_kinds), "complete": complete,
               "replaced": changed, "completeness_pairs": completeness, "kept_written": len(by_row) - changed,
               "wrong": len(wrong),
               "cut_by_length": sum(r["cut"] for r in records), "reasons": dict(sorted(kinds.items())),
               "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                            "max_tokens": sampling.max_tokens}}
    log(f"on-policy pairs: {changed} of {len(by_row)} rows now train on the parent's own answers "
        f"({f'{completeness} of them a more complete right answer over a less complete one; ' if complete else ''}"
        f"{summary['kept_written']} keep the written pair; {len(wrong)} of {len(records)} answers were wrong; "
        f"reasons of the rejected ones {dict(kinds)})")
    return out, summary

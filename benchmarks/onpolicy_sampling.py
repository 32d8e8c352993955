"""On-policy sampling: Palate's sampler (training/onpolicy.py `sample_answers`) against `model.generate`, the same
prompts, the same merged parent, in one run, as a ratio table (generate = 1.00).

    .venv/bin/python -m benchmarks.onpolicy_sampling [--adapter sft] [--prompts 64] [--repeats 2]
                                                      [--batch N] [--append benchmarks/RESULTS.md]

Both sample the first `--prompts` DPO training prompts at the arena's settings (configs/arena.yaml) in batches of
`training.onpolicy.BATCH`, from the parent merged into a bf16 (or fp32: `--dtype`) copy of the base model, as a
DPO job with on-policy pairs does. `generate` computes every answer of a batch until the longest ends and applies
transformers' default top_k 50 on top of top_p; Palate's sampler drops an answer from the batch when it ends and
samples as the arena's engine does (top_p only). Reported: seconds (best of `--repeats`), answers/s, mean answer
tokens, the share cut by the length limit, and the share of answers the dataset's grounding check calls wrong (the
two samplers draw different tokens, so this column shows they sample the same kind of answers, not equal ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _generate(model, tokenizer, prompts, sampling, seed):
    """The sampler before: `model.generate` per batch, as training/onpolicy.py called it until 2026-12-07."""
    import torch

    from training import onpolicy

    tokenizer.padding_side = "left"
    out = []
    for start in range(0, len(prompts), onpolicy.BATCH):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts[start:start + onpolicy.BATCH]]
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
    return out


def run(args) -> list[dict]:
    from transformers import AutoTokenizer

    from core.config import load_config
    from core.registry import AdapterRegistry
    from training import onpolicy
    from training.onpolicy import Sampling, sample_answers, sampler, why_rejected, is_wrong

    onpolicy.BATCH = args.batch or onpolicy.BATCH
    cfg = load_config(args.config, {"server.adapter_root": args.registry} if args.registry else None)
    model_dir = cfg.model.resolved_dir()
    adapter = AdapterRegistry(cfg.server.registry_root()).resolve(args.adapter)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()][:args.prompts]
    facts = [row.get("listing") for row in rows]
    prompts = [row["prompt"] for row in rows]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = sampler(model_dir, adapter.path, args.dtype)
    sampling = Sampling.arena()
    results = []
    for name, sample in (("model.generate (before)", _generate), ("Palate sample_answers", sample_answers)):
        best, answers = float("inf"), []
        for _ in range(args.repeats):
            started = time.perf_counter()
            answers = sample(model, tokenizer, prompts, sampling, 0)
            best = min(best, time.perf_counter() - started)
        tokens = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text, _ in answers]
        wrong = [is_wrong(why_rejected(text, f, cut)) for (text, cut), f in zip(answers, facts)]
        results.append({"sampler": name, "answers": len(answers), "seconds": best,
                        "answers_per_s": len(answers) / best, "mean_tokens": sum(tokens) / len(tokens),
                        "cut": sum(cut for _, cut in answers) / len(answers), "wrong": sum(wrong) / len(wrong)})
    return results


def table(results: list[dict]) -> str:
    base = results[0]["answers_per_s"]
    lines = ["| sampler | answers | seconds | answers/s | vs generate | mean answer tokens | cut by length | wrong |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['sampler']} | {r['answers']} | {r['seconds']:.1f} | {r['answers_per_s']:.2f} | "
                     f"{r['answers_per_s'] / base:.2f}x | {r['mean_tokens']:.0f} | {r['cut']:.2f} | {r['wrong']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="sft", help="registry ref of the parent (default: the sft alias)")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--data", default=str(ROOT / "data/listings/prefs_train.jsonl"))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="prompts per batch (default training.onpolicy.BATCH)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--append", default=None, help="append the table to this Markdown file")
    args = parser.parse_args()
    from training import onpolicy

    results = run(args)
    out = table(results)
    print(out)
    if args.append:
        command = "python -m benchmarks.onpolicy_sampling " + " ".join(sys.argv[1:])
        header = (f"\n## On-policy sampling: Palate's sampler vs model.generate "
                  f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                  f"`{command}` on {platform.machine()}, {os.cpu_count()} CPU cores, parent `{args.adapter}` merged "
                  f"into a {args.dtype} copy of the base model, batches of {onpolicy.BATCH}; best of {args.repeats} "
                  "runs, nothing else running.\n\n")
        with open(args.append, "a") as handle:
            handle.write(header + out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

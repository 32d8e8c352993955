"""Margin scoring speed: the serving engine (vLLM prompt log-probs) vs the transformers + PEFT reference.

    .venv/bin/python benchmarks/margins.py --pairs 48 [--adapter dpo] [--kernels palate vllm] [--append benchmarks/RESULTS.md]

Both score the same tokenized held-out pairs (chosen and rejected: two sequences per pair) in float32 - the setting
in which they agree within 0.05 nats per pair - under the base model and under one adapter, in one run on one
machine. The vLLM engine runs once per `--kernels` setting: Palate's grouped CPU LoRA kernels (`vllm.fast_cpu_lora`,
the default) and vLLM's own. Engine start-up and model loading are timed separately and excluded from pairs/s. Prints a Markdown table;
`--append` adds it, with the command and date, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KERNEL_NAMES = {"palate": "Palate's", "vllm": "vLLM's"}


def _adapter(registry_root: Path, ref: str | None):
    from core.registry import AdapterRegistry, RegistryError

    if not ref:
        return None
    try:
        return AdapterRegistry(registry_root).resolve(ref)
    except RegistryError as exc:
        print(f"no adapter {ref!r} ({exc}); timing the base model only", file=sys.stderr)
        return None


async def _time_scorer(scorer, pairs, adapter, repeats: int) -> float:
    """Best-of-`repeats` seconds to score every pair (the first run also warms caches)."""
    from eval.scoring import score_pairs

    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await score_pairs(scorer, pairs, adapter)
        best = min(best, time.perf_counter() - started)
    return best


async def run(args) -> list[dict]:
    from core.config import load_config
    from eval.engine import adapter_handles, scoring_engine
    from eval.logprobs_hf import HfScorer
    from eval.pairs import read_pairs, tokenize_pair

    # The registry decides vllm.max_lora_rank when the config leaves it null, so load the config with it.
    cfg = load_config(args.config, {"server.adapter_root": args.registry} if args.registry else None)
    model_dir = cfg.model.resolved_dir()
    adapter = _adapter(ROOT / cfg.server.adapter_root if not args.registry else Path(args.registry), args.adapter)
    rows = read_pairs(args.data, limit=args.pairs)
    results = []

    started = time.perf_counter()
    hf = HfScorer(model_dir, dtype="float32", batch_size=args.hf_batch)
    hf_load = time.perf_counter() - started
    pairs = [tokenize_pair(hf.tokenizer(), row) for row in rows]
    tokens = sum(len(p.prompt_ids) * 2 + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    targets = [("base", None)] + ([(adapter.ref, adapter)] if adapter else [])
    for label, target in targets:
        seconds = await _time_scorer(hf, pairs, target, args.repeats)
        results.append({"scorer": f"transformers+PEFT (batch {args.hf_batch})", "model": label, "seconds": seconds,
                        "startup": hf_load})
    await hf.shutdown()
    del hf

    for kernels in args.kernels:
        # One engine per setting, one after the other; the switch reaches its engine-core process through the
        # environment VllmEngine sets before starting it (server/engines/cpu_lora.py).
        started = time.perf_counter()
        vllm_cfg = cfg.server.vllm.model_copy(update={"kv_cache_space_gib": args.kv_cache_gib, "max_model_len": 1024,
                                                      "fast_cpu_lora": kernels == "palate"})
        engine = scoring_engine(model_dir, vllm_cfg, dtype="float32")
        await engine.start()
        handles = adapter_handles([adapter]) if adapter else {}
        for handle in handles.values():
            await engine.load_adapter(handle)
        engine_start = time.perf_counter() - started
        scorer = f"vLLM engine (prompt logprobs), {KERNEL_NAMES[kernels]} CPU LoRA kernels"
        try:
            for label, target in targets:
                seconds = await _time_scorer(engine, pairs, handles.get(label) if target else None, args.repeats)
                results.append({"scorer": scorer, "model": label, "seconds": seconds, "startup": engine_start,
                                "max_lora_rank": vllm_cfg.max_lora_rank})
        finally:
            await engine.shutdown()
    for r in results:
        r.update(pairs=len(pairs), tokens=tokens, pairs_per_s=len(pairs) / r["seconds"])
    return results


def table(results: list[dict]) -> str:
    lines = ["| scorer | model | pairs | tokens | seconds | pairs/s | start-up s | vLLM / HF |", "|---|---|---|---|---|---|---|---|"]
    hf = {r["model"]: r["pairs_per_s"] for r in results if r["scorer"].startswith("transformers")}
    for r in results:
        ratio = f"{r['pairs_per_s'] / hf[r['model']]:.2f}x" if r["scorer"].startswith("vLLM") and r["model"] in hf else ""
        lines.append(f"| {r['scorer']} | {r['model']} | {r['pairs']} | {r['tokens']} | {r['seconds']:.1f} | "
                     f"{r['pairs_per_s']:.2f} | {r['startup']:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data/listings/prefs_eval.jsonl"))
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--adapter", default="dpo", help="registry ref to time besides base ('' for none)")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hf-batch", type=int, default=8)
    parser.add_argument("--kernels", nargs="+", choices=["palate", "vllm"], default=["palate", "vllm"],
                        help="which CPU LoRA kernels the vLLM engine runs, each timed in turn (vllm.fast_cpu_lora)")
    parser.add_argument("--kv-cache-gib", type=int, default=1, help="vLLM CPU KV cache (GiB); small keeps RAM low")
    parser.add_argument("--append", default=None, help="append the table to this Markdown file")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    out = table(results)
    print(out)
    if args.append:
        command = "python benchmarks/margins.py " + " ".join(sys.argv[1:])
        header = (f"\n## Margin scoring: vLLM engine vs transformers + PEFT ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                  f"`{command}` on {platform.machine()}, {os.cpu_count()} CPU cores, float32 both sides; "
                  f"best of {args.repeats} runs, start-up excluded from pairs/s; vLLM max_lora_rank "
                  f"{results[-1].get('max_lora_rank')}.\n\n")
        with open(args.append, "a") as handle:
            handle.write(header + out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

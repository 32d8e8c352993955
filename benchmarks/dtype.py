"""Engine dtype on this CPU: bfloat16 vs float32, the same vLLM engine (no LoRA), one after the other.

    .venv/bin/python benchmarks/dtype.py [--streams 16] [--tokens 64]

Prints decode throughput for one stream and for --streams streams (ignore_eos, so every stream makes --tokens
tokens) and the prefill rate of one long prompt, per dtype, and the float32/bfloat16 ratios. On a CPU without
bf16 instructions (AVX-512 BF16 / AMX) bf16 matmuls are emulated; `vllm.dtype: auto` picks float32 there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = [{"role": "user", "content": "Describe a 2-bed condo near downtown with in-unit laundry and a balcony."}]


async def measure(dtype: str, streams: int, tokens: int) -> dict:
    from core.config import load_config
    from server.engines.base import Sampling
    from server.engines.vllm_engine import VllmEngine

    cfg = load_config()
    vllm_cfg = cfg.server.vllm.model_copy(update={"dtype": dtype, "enable_lora": False, "max_model_len": 1024,
                                                  "kv_cache_space_gib": 1})
    engine = VllmEngine(cfg.model.resolved_dir(), vllm_cfg)
    await engine.start()
    try:
        ids = engine.tokenizer().apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"]

        async def one(i: int, n: int) -> None:
            async for _ in engine.generate(list(ids), Sampling(max_tokens=n, temperature=0.7, seed=i, ignore_eos=True),
                                           None, f"bench-{dtype}-{i}-{n}"):
                pass

        await asyncio.gather(*(one(i, 8) for i in range(2)))  # warm-up
        result = {}
        for count in (1, streams):
            start = time.perf_counter()
            await asyncio.gather(*(one(100 + i, tokens) for i in range(count)))
            result[f"decode x{count}"] = count * tokens / (time.perf_counter() - start)
        long_prompt = list(ids) * 12
        start = time.perf_counter()
        async for _ in engine.generate(long_prompt, Sampling(max_tokens=1), None, f"bench-{dtype}-prefill"):
            pass
        result[f"prefill {len(long_prompt)}"] = len(long_prompt) / (time.perf_counter() - start)
        return result
    finally:
        await engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    from core.config import cpu_has_bf16_instructions

    runs = {dtype: asyncio.run(measure(dtype, args.streams, args.tokens)) for dtype in ("bfloat16", "float32")}
    print(f"CPU bf16 instructions: {cpu_has_bf16_instructions()}\n")
    print("| tokens/s | bfloat16 | float32 | float32 / bfloat16 |\n|---|---|---|---|")
    for key in runs["bfloat16"]:
        bf16, fp32 = runs["bfloat16"][key], runs["float32"][key]
        print(f"| {key} | {bf16:.1f} | {fp32:.1f} | {fp32 / bf16:.2f}x |")


if __name__ == "__main__":
    main()

"""What the non-finite logits check costs: the sampled token's logprob, which Palate's vLLM engine always asks for.

    .venv/bin/python benchmarks/finite_check.py [--streams 8] [--tokens 64] [--repeats 4]

One vLLM engine (the embedded model, float32, no adapter); --streams greedy requests at once, `ignore_eos` so each
makes --tokens tokens, with `logprobs=None` (vLLM computes no logprobs) and `logprobs=0` (the sampled token's, what
`VllmEngine` asks for so it can fail a request whose logits are NaN or infinite), alternating order each repeat.
Prints tokens/s per setting (every repeat and the median) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def measure(streams: int, tokens: int, repeats: int) -> dict:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from core.config import load_config
    from server.engines.vllm_engine import VllmEngine

    config = load_config()
    cfg = config.server.vllm.model_copy(update={"enable_lora": False, "max_model_len": 1024, "kv_cache_space_gib": 1,
                                                "max_num_seqs": streams})
    engine = VllmEngine(config.model.resolved_dir(), cfg)
    await engine.start()
    prompts = [f"Write a listing for a {i + 2}-bed house with a garden." for i in range(streams)]

    async def one(prompt: str, logprobs: int | None, tag: str) -> int:
        params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True, logprobs=logprobs,
                                output_kind=RequestOutputKind.DELTA)
        made = 0
        async for out in engine._llm.generate(prompt, params, tag):
            made += len(out.outputs[0].token_ids)
        return made

    async def batch(logprobs: int | None, tag: str) -> float:
        started = time.perf_counter()
        made = sum(await asyncio.gather(*(one(p, logprobs, f"{tag}-{i}") for i, p in enumerate(prompts))))
        return made / (time.perf_counter() - started)

    try:
        await batch(None, "warm")
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for repeat in range(repeats):
            order = ("off", "on") if repeat % 2 == 0 else ("on", "off")
            for setting in order:
                rates[setting].append(await batch(None if setting == "off" else 0, f"{setting}{repeat}"))
        return rates
    finally:
        await engine.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    rates = asyncio.run(measure(args.streams, args.tokens, args.repeats))
    print(f"\nstreams={args.streams} tokens={args.tokens} repeats={args.repeats}\n")
    print("| setting | tokens/s per repeat | median | vs no logprobs |\n|---|---|---:|---:|")
    base = statistics.median(rates["off"])
    for setting, label in (("off", "logprobs=None (no check possible)"), ("on", "logprobs=0 (Palate's check)")):
        median = statistics.median(rates[setting])
        print(f"| {label} | {', '.join(f'{r:.1f}' for r in rates[setting])} | {median:.1f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

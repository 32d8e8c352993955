"""Serving benchmark: Palate (vllm engine) vs vLLM's own OpenAI server vs Palate (hf engine), in one run.

    .venv/bin/python benchmarks/serving.py [--registry adapters] [--requests-per-level 2] [--max-tokens 64]

Each server is started alone on this machine (so they never compete for cores), on the same base model and the
same adapters, and gets the same load: fixed prompts, greedy decoding, fixed max_tokens, concurrency 8 and 32, for
base-only, one-adapter (sft) and mixed base/sft/dpo traffic. Throughput counts the completion tokens the server
reports. Prints one table plus the ratios Palate/raw-vLLM and mixed/base-only measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import PROJECT_ROOT  # noqa: E402
from core.registry import AdapterRegistry  # noqa: E402
from tests.helpers import start_raw_vllm, start_server  # noqa: E402

PROMPTS = [
    "Describe a 2-bed condo near downtown with in-unit laundry and a covered parking spot.",
    "Write a listing for a three-bedroom house with a fenced garden, 10 minutes from the train.",
    "Describe a renovated loft with exposed brick, 1 bath, 780 square feet, near the Green Line.",
    "Write a short listing for a townhouse with two baths, a garage and a monthly fee of $210.",
]
MIXES = {"base-only": ["base"], "one-adapter": ["sft"], "mixed": ["base", "sft", "dpo"]}


async def _one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if ttft is None and any(choice["delta"].get("content") for choice in chunk["choices"]):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return (ttft if ttft is not None else time.perf_counter() - started), tokens


async def run_load(url: str, models: list[str], concurrency: int, requests: int, max_tokens: int) -> dict:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=1800) as client:
        async def task(i: int):
            async with semaphore:
                return await _one(client, url, models[i % len(models)], PROMPTS[i % len(PROMPTS)], max_tokens)

        started = time.perf_counter()
        results = await asyncio.gather(*(task(i) for i in range(requests)))
        wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    if tokens == 0:
        raise RuntimeError(f"{url} reported no completion tokens: is stream_options.include_usage honoured?")
    return {"tok_s": tokens / wall, "tokens": tokens, "wall_s": wall, "ttft_p50": statistics.median(ttfts),
            "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=str(PROJECT_ROOT / "adapters"))
    parser.add_argument("--requests-per-level", type=int, default=2, help="requests = this x concurrency")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--hf-requests", type=int, default=6, help="the hf engine is sequential: fewer requests")
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args()
    registry = AdapterRegistry(args.registry)
    workdir = PROJECT_ROOT / "runs" / "bench-serving"
    workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str, int], dict] = {}

    def measure(label: str, url: str, levels: list[int], requests_for) -> None:
        asyncio.run(run_load(url, ["base"], 2, 2, 8))  # warm-up
        for mix, models in MIXES.items():
            for concurrency in levels:
                rows[(label, mix, concurrency)] = asyncio.run(
                    run_load(url, models, concurrency, requests_for(concurrency), args.max_tokens))
                r = rows[(label, mix, concurrency)]
                print(f"  {label:12s} {mix:11s} c={concurrency:<3d} {r['tok_s']:7.1f} tok/s", flush=True)

    per_level = lambda c: c * args.requests_per_level  # noqa: E731
    print("palate (vllm engine) ...", flush=True)
    server = start_server(workdir / "palate", Path(args.registry), mount_arena=False)
    try:
        measure("palate-vllm", server.url, args.concurrency, per_level)
    finally:
        server.stop()
    print("raw vLLM OpenAI server ...", flush=True)
    raw = start_raw_vllm(workdir / "raw-vllm", {alias: registry.resolve(alias).path for alias in ("sft", "dpo")})
    try:
        measure("raw-vllm", raw.url, args.concurrency, per_level)
    finally:
        raw.stop()
    if not args.skip_hf:
        print("palate (hf engine) ...", flush=True)
        server = start_server(workdir / "palate-hf", Path(args.registry), mount_arena=False, engine="hf")
        try:
            measure("palate-hf", server.url, [args.concurrency[0]], lambda c: args.hf_requests)
        finally:
            server.stop()

    print()
    print(f"| server | traffic | concurrency | tok/s | TTFT p50 (s) | TTFT p95 (s) | vs raw vLLM | vs base-only |")
    print("|---|---|---|---|---|---|---|---|")
    for (label, mix, concurrency), r in rows.items():
        raw = rows.get(("raw-vllm", mix, concurrency))
        base = rows.get((label, "base-only", concurrency))
        vs_raw = f"{r['tok_s'] / raw['tok_s']:.2f}" if raw else "-"
        vs_base = f"{r['tok_s'] / base['tok_s']:.2f}" if base else "-"
        print(f"| {label} | {mix} | {concurrency} | {r['tok_s']:.1f} | {r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} "
              f"| {vs_raw} | {vs_base} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

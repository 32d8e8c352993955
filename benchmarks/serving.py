"""Serving benchmark: Palate with its CPU LoRA kernels vs Palate with vLLM's own vs vLLM's own OpenAI server, in one run.

    .venv/bin/python benchmarks/serving.py [--registry adapters] [--requests-per-level 2] [--max-tokens 64]
                                           [--concurrency 8 32] [--battles 3] [--skip-hf] [--out table.md]

Each server is started alone on this machine (so they never compete for cores), on the same base model and the
same adapters (`sft` and `dpo` of --registry), and gets the same load: fixed prompts, greedy decoding, fixed
max_tokens, at each concurrency, for base-only, one-adapter (sft) and mixed base/sft/dpo traffic. Throughput counts
the completion tokens the server reports. Servers:

- palate-vllm: Palate's vllm engine as configured by default (Palate's grouped CPU LoRA kernels on CPU);
- palate-vllm-kernels-off: the same with `vllm.fast_cpu_lora: false` (vLLM's own CPU LoRA kernels);
- palate-vllm-no-lora: `vllm.enable_lora: false`, base-only traffic: what LoRA support costs a base request (vLLM's
  CPU platform turns compilation off whenever LoRA is enabled);
- raw-vllm: `python -m vllm.entrypoints.openai.api_server` with LoRA (its own kernels: PALATE_FAST_CPU_LORA=0), in
  the dtype Palate's engine picks here (float32 on a CPU without bf16 instructions; vLLM's own default would be the
  checkpoint's bfloat16, 4-5x slower on such a CPU: benchmarks/dtype.py) and vLLM's default max_lora_rank 32;
- palate-hf: the transformers + PEFT reference engine, fewer requests (it serves one at a time); --skip-hf drops it.

Arena: on each palate-vllm server, --battles blind battles (POST /v1/arena/battles, `--battle-tokens` per side)
one after another on the otherwise idle server, each timed to its last `side_done`, against one base-only answer of
the same length (the longer side's completion tokens, `ignore_eos` so it cannot stop early) on the same server.

Prints the tables with ratios measured in this run (vs raw vLLM, vs the same server's base-only, kernels on vs off).
Admission control is off in the Palate servers: one load generator is one client, and the benchmark measures the
engine, not the fair-share limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import PROJECT_ROOT  # noqa: E402
from core.registry import AdapterRegistry  # noqa: E402
from server.engines.cpu_lora import ENV_SWITCH  # noqa: E402
from tests.helpers import start_raw_vllm, start_server  # noqa: E402

PROMPTS = [
    "Describe a 2-bed condo near downtown with in-unit laundry and a covered parking spot.",
    "Write a listing for a three-bedroom house with a fenced garden, 10 minutes from the train.",
    "Describe a renovated loft with exposed brick, 1 bath, 780 square feet, near the Green Line.",
    "Write a short listing for a townhouse with two baths, a garage and a monthly fee of $210.",
]
MIXES = {"base-only": ["base"], "one-adapter": ["sft"], "mixed": ["base", "sft", "dpo"]}
NO_ADMISSION = {"admission": {"enabled": False}}


async def _one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int,
               ignore_eos: bool = False) -> tuple[float, int, float]:
    """(time to first token, completion tokens, wall seconds) of one streamed chat completion."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    started = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if ttft is None and any(choice["delta"].get("content") for choice in chunk["choices"]):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    wall = time.perf_counter() - started
    return (ttft if ttft is not None else wall), tokens, wall


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


async def one_battle(url: str, prompt: str, max_tokens: int, seed: int) -> dict:
    """Start a blind battle and time it: first text of either side, and the last side_done."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "seed": seed, "judge": "benchmark"}
    started = time.perf_counter()
    first, tokens, done = None, {}, 0
    async with httpx.AsyncClient(timeout=1800) as client:
        async with client.stream("POST", f"{url}/v1/arena/battles", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"battle: {response.status_code} {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: "):])
                if event.get("type") == "delta" and first is None and event.get("text"):
                    first = time.perf_counter() - started
                if event.get("type") == "side_done":
                    if event.get("finish_reason") == "error":
                        raise RuntimeError(f"battle side failed: {event}")
                    tokens[event["side"]] = event.get("completion_tokens") or 0
                    done += 1
                    if done == 2:
                        break
    wall = time.perf_counter() - started
    return {"wall_s": wall, "ttft_s": first if first is not None else wall, "tokens": tokens}


async def run_battles(url: str, battles: int, max_tokens: int) -> dict:
    rows = []
    async with httpx.AsyncClient(timeout=1800) as client:
        for i in range(battles):
            battle = await one_battle(url, PROMPTS[i % len(PROMPTS)], max_tokens, seed=1000 + i)
            length = max(battle["tokens"].values())
            _, base_tokens, base_wall = await _one(client, url, "base", PROMPTS[i % len(PROMPTS)], length,
                                                   ignore_eos=True)
            rows.append({**battle, "length": length, "base_tokens": base_tokens, "base_wall_s": base_wall})
            if base_tokens != length:  # the comparison is only fair at equal length: say so in the table
                print(f"  note: base answer has {base_tokens} tokens, the battle's longer side {length}", flush=True)
    mean = lambda key: statistics.mean(r[key] for r in rows)  # noqa: E731
    return {"battles": battles, "length": mean("length"), "wall_s": mean("wall_s"), "ttft_s": mean("ttft_s"),
            "base_wall_s": mean("base_wall_s"), "base_tokens": mean("base_tokens"), "ratio": statistics.mean(r["wall_s"] / r["base_wall_s"] for r in rows),
            "worst_ratio": max(r["wall_s"] / r["base_wall_s"] for r in rows)}


def tables(rows: dict, arena: dict) -> str:
    lines = ["| server | traffic | concurrency | tok/s | TTFT p50 (s) | TTFT p95 (s) | vs raw vLLM | vs base-only "
             "(same server) | kernels on / off |", "|---|---|---|---|---|---|---|---|---|"]
    for (label, mix, concurrency), r in rows.items():
        raw = rows.get(("raw-vllm", mix, concurrency))
        base = rows.get((label, "base-only", concurrency))
        off = rows.get(("palate-vllm-kernels-off", mix, concurrency)) if label == "palate-vllm" else None
        ratio = lambda a, b: f"{a['tok_s'] / b['tok_s']:.2f}" if b else "-"  # noqa: E731
        lines.append(f"| {label} | {mix} | {concurrency} | {r['tok_s']:.1f} | {r['ttft_p50']:.2f} | "
                     f"{r['ttft_p95']:.2f} | {ratio(r, raw)} | {ratio(r, base)} | {ratio(r, off)} |")
    if arena:
        lines += ["", "| server | battles | tokens per side (longer side, mean) | battle, both sides done (s) | "
                  "first text (s) | one base-only answer of that length (s) | its tokens (mean) | battle / base answer (mean, worst) |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, a in arena.items():
            lines.append(f"| {label} | {a['battles']} | {a['length']:.0f} | {a['wall_s']:.1f} | {a['ttft_s']:.2f} | "
                         f"{a['base_wall_s']:.1f} | {a['base_tokens']:.0f} | {a['ratio']:.2f}, {a['worst_ratio']:.2f} |")
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=str(PROJECT_ROOT / "adapters"))
    parser.add_argument("--requests-per-level", type=int, default=2, help="requests = this x concurrency")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--battles", type=int, default=3, help="arena battles per palate-vllm server (0: none)")
    parser.add_argument("--battle-tokens", type=int, default=192)
    parser.add_argument("--hf-requests", type=int, default=6, help="the hf engine is sequential: fewer requests")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    registry = AdapterRegistry(args.registry)
    for alias in ("sft", "dpo"):
        registry.resolve(alias)  # fail now, not after the first server, if the registry lacks them
    workdir = PROJECT_ROOT / "runs" / "bench-serving"
    workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str, int], dict] = {}
    arena: dict[str, dict] = {}

    def measure(label: str, url: str, levels: list[int], requests_for, mixes=MIXES) -> None:
        asyncio.run(run_load(url, ["base"], 2, 2, 8))  # warm-up
        for mix, models in mixes.items():
            for concurrency in levels:
                rows[(label, mix, concurrency)] = r = asyncio.run(
                    run_load(url, models, concurrency, requests_for(concurrency), args.max_tokens))
                print(f"  {label:24s} {mix:11s} c={concurrency:<3d} {r['tok_s']:7.1f} tok/s", flush=True)

    def palate(label: str, *, battles: bool = True, mixes=MIXES, **vllm) -> None:
        print(f"{label} ...", flush=True)
        server = start_server(workdir / label, Path(args.registry), mount_arena=False, vllm=vllm, **NO_ADMISSION)
        try:
            measure(label, server.url, args.concurrency, per_level, mixes)
            if battles and args.battles:
                arena[label] = a = asyncio.run(run_battles(server.url, args.battles, args.battle_tokens))
                print(f"  {label:24s} arena battle {a['wall_s']:.1f} s vs base answer {a['base_wall_s']:.1f} s "
                      f"({a['ratio']:.2f}x)", flush=True)
        finally:
            server.stop()

    per_level = lambda c: c * args.requests_per_level  # noqa: E731
    # max_lora_rank None: Palate's default (the registry's largest rank, rounded up); the raw server keeps 32.
    palate("palate-vllm", fast_cpu_lora=True, max_lora_rank=None)
    palate("palate-vllm-kernels-off", fast_cpu_lora=False, max_lora_rank=None)
    palate("palate-vllm-no-lora", battles=False, mixes={"base-only": ["base"]}, enable_lora=False)
    if not args.skip_raw:
        print("raw-vllm (vLLM's OpenAI server) ...", flush=True)
        os.environ[ENV_SWITCH] = "0"  # its own kernels, even where the caller's environment says otherwise
        raw = start_raw_vllm(workdir / "raw-vllm", {alias: registry.resolve(alias).path for alias in ("sft", "dpo")})
        try:
            measure("raw-vllm", raw.url, args.concurrency, per_level)
        finally:
            raw.stop()
    if not args.skip_hf:
        print("palate-hf ...", flush=True)
        server = start_server(workdir / "palate-hf", Path(args.registry), mount_arena=False, engine="hf",
                              **NO_ADMISSION)
        try:
            measure("palate-hf", server.url, [args.concurrency[0]], lambda c: args.hf_requests)
        finally:
            server.stop()

    out = tables(rows, arena)
    print()
    print(out)
    if args.out:
        Path(args.out).write_text(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

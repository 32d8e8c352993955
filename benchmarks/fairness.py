"""Fair share under load: one client opens 50 arena battles at once; does another client still get served promptly?

    .venv/bin/python benchmarks/fairness.py [--registry adapters] [--battles 50] [--battle-tokens 128]
                                            [--probes 3] [--compare-off] [--out table.md]

One `palate serve` (real vLLM engine, the registry's `sft` and `dpo` as contestants - two-step ones trained on the
spot when the registry has none - and admission control as configured by default in core/config.py). The neighbour sends a streamed 16-token chat request on `base` from
127.0.0.2; the greedy client opens --battles battles at once from 127.0.0.1 (no judge id: it is one address).

1. idle: the neighbour's time to first token with nothing else running (median of --probes requests);
2. loaded: the same request, --probes times one after another, while the battles run;
3. the greedy client's answers: admitted (200) or refused (429, with Retry-After), and how long the slowest
   refusal took to arrive (a refusal must come at once, not after a wait).

--compare-off repeats 2 on a server with `admission.enabled: false` (the neighbour's request then waits behind every
battle; each probe is cut off at --off-timeout seconds). Prints a table with ratios against the idle time measured
in the same run. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import AdmissionConfig, project_path  # noqa: E402
from core.registry import AdapterRegistry  # noqa: E402
from tests.helpers import start_server, train_tiny_adapters  # noqa: E402

CHAT = {"model": "base", "max_tokens": 16, "temperature": 0, "stream": True,
        "messages": [{"role": "user", "content": "Describe a 2-bed condo near downtown with in-unit laundry."}]}
BATTLE_PROMPT = "Write a listing for a three-bedroom house with a fenced garden, 10 minutes from the train."


async def neighbour_ttft(url: str, timeout_s: float) -> float | None:
    """Seconds to the first content chunk of one streamed chat request from 127.0.0.2; None past timeout_s."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    started = time.perf_counter()

    async def first_token() -> float:
        async with httpx.AsyncClient(transport=transport, timeout=timeout_s + 10) as client:
            async with client.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                        return time.perf_counter() - started
        raise RuntimeError("the chat stream ended without content")

    try:
        return await asyncio.wait_for(first_token(), timeout_s)
    except asyncio.TimeoutError:
        return None


async def one_battle(client: httpx.AsyncClient, url: str, tokens: int) -> dict:
    started = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/arena/battles",
                             json={"prompt": BATTLE_PROMPT, "max_tokens": tokens}) as response:
        answered = time.perf_counter() - started
        await response.aread()
        return {"status": response.status_code, "answered_s": answered,
                "retry_after": response.headers.get("retry-after"), "done_s": time.perf_counter() - started}


async def loaded(url: str, battles: int, tokens: int, probes: int, probe_timeout_s: float,
                 wait_for_battles: bool = True) -> tuple[list, list]:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
    limits = httpx.Limits(max_connections=battles + 5)
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=900) as greedy:
        tasks = [asyncio.create_task(one_battle(greedy, url, tokens)) for _ in range(battles)]
        await asyncio.sleep(2.0)  # the battles are admitted, queued or refused; the admitted ones are generating
        ttfts = []
        for _ in range(probes):
            ttfts.append(await neighbour_ttft(url, probe_timeout_s))
        if not wait_for_battles:  # admission off: all 50 run at once; stop them once the probes are done
            for task in tasks:
                task.cancel()
        results = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, dict)]
    return ttfts, results


def _fmt(value: float | None, cap: float) -> str:
    return f"> {cap:.0f}" if value is None else f"{value:.2f}"


def table(idle: list[float], ttfts: list, results: list, off: list | None, off_timeout: float) -> str:
    base = statistics.median(idle)
    measured = [t for t in ttfts if t is not None]
    refused = [r for r in results if r["status"] == 429]
    admitted = [r for r in results if r["status"] == 200]
    other = [r for r in results if r["status"] not in (200, 429)]
    rows = ["| measurement | seconds | ratio vs idle |", "|---|---:|---:|",
            f"| neighbour TTFT, idle (median of {len(idle)}: {', '.join(f'{t:.2f}' for t in idle)}) | {base:.2f} | 1.00 |"]
    for i, t in enumerate(ttfts, 1):
        rows.append(f"| neighbour TTFT under {len(results)} battles, probe {i} | {_fmt(t, off_timeout)} | "
                    f"{'-' if t is None else f'{t / base:.2f}'} |")
    if measured:
        rows.append(f"| neighbour TTFT under load, median | {statistics.median(measured):.2f} | "
                    f"{statistics.median(measured) / base:.2f} |")
    for i, t in enumerate(off or [], 1):
        rows.append(f"| admission off: neighbour TTFT under {len(results)} battles, probe {i} | "
                    f"{_fmt(t, off_timeout)} | {'-' if t is None else f'{t / base:.2f}'} |")
    retry = sorted(int(r["retry_after"]) for r in refused if r["retry_after"])
    rows += ["", "| greedy client (one address, parallel battles) | value |", "|---|---:|",
             f"| battles sent | {len(results)} |", f"| admitted and run to the end (200) | {len(admitted)} |",
             f"| refused with 429 | {len(refused)} |", f"| 429s carrying Retry-After | {len(retry)} |",
             f"| Retry-After values (s) | {', '.join(map(str, sorted(set(retry)))) or '-'} |",
             f"| slowest 429 to arrive (s) | {max((r['answered_s'] for r in refused), default=0):.2f} |",
             f"| other statuses | {len(other)} |",
             f"| slowest admitted battle, start to end (s) | {max((r['done_s'] for r in admitted), default=0):.1f} |"]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="adapters", help="Registry with sft and dpo (the contestants).")
    parser.add_argument("--battles", type=int, default=50)
    parser.add_argument("--battle-tokens", type=int, default=128)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--probe-timeout", type=float, default=120.0)
    parser.add_argument("--compare-off", action="store_true", help="Also measure with admission control off.")
    parser.add_argument("--out", default=None, help="Also write the table to this file.")
    args = parser.parse_args()
    registry = project_path(args.registry)
    print(f"admission defaults: {AdmissionConfig().model_dump()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="palate-fairness-") as tmp:
        if not {"sft", "dpo"} <= set(AdapterRegistry(registry).aliases()):
            # The arena needs two contestants; what they say does not matter here, only that they run.
            print(f"{registry} has no sft and dpo: training two-step ones (tests.helpers.train_tiny_adapters)",
                  flush=True)
            registry = Path(tmp) / "adapters"
            train_tiny_adapters(registry)
        server = start_server(Path(tmp) / "on", registry, mount_arena=False)
        try:
            idle = [asyncio.run(neighbour_ttft(server.url, args.probe_timeout)) for _ in range(args.probes)]
            ttfts, results = asyncio.run(loaded(server.url, args.battles, args.battle_tokens, args.probes,
                                                args.probe_timeout))
        finally:
            server.stop()
        off = None
        if args.compare_off:
            server = start_server(Path(tmp) / "off", registry, mount_arena=False, admission={"enabled": False})
            try:
                off, _ = asyncio.run(loaded(server.url, args.battles, args.battle_tokens, 1, args.probe_timeout,
                                            wait_for_battles=False))
            finally:
                server.stop()
    text = table(idle, ttfts, results, off, args.probe_timeout)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

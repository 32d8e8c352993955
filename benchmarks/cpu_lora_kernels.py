"""CPU LoRA kernel benchmark: Palate's grouped kernels vs vLLM 0.32's PunicaWrapperCPU, same inputs, same run.

    .venv/bin/python benchmarks/cpu_lora_kernels.py [--rank 16] [--slot-rank 16 32] [--threads 1] [--repeats 2]

Times what one engine step spends in LoRA: every LoRA layer of a SmolLM2-135M-shaped model (30 layers; q/k/v packed
576+192+192, o 576, gate/up packed 1536+1536, down 576; hidden 576), called through each wrapper's
`add_lora_linear`, exactly as vLLM's layers call it, in bf16. Batches: a 320-token prefill of one adapter, decode
steps of 8 and 32 tokens on one adapter, and mixed decode steps (base / sft / dpo tokens interleaved: a base token
has no adapter). `--slot-rank` is the engine's max_lora_rank (the slot width), `--rank` the adapters' own rank.
No engine, no model weights: random LoRA matrices of those shapes. Prints ms per step and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HIDDEN, KV, INTERMEDIATE, LAYERS, SLOTS = 576, 192, 1536, 30, 4
# (input width, output slices) of each LoRA layer in one transformer block
BLOCK = [(HIDDEN, (HIDDEN, KV, KV)), (HIDDEN, (HIDDEN,)), (HIDDEN, (INTERMEDIATE, INTERMEDIATE)),
         (INTERMEDIATE, (HIDDEN,))]
BATCHES = {
    "prefill 320, one adapter": [1] * 320,
    "decode 8, one adapter": [1] * 8,
    "decode 32, one adapter": [1] * 32,
    "decode 8, mixed base/sft/dpo": [0, 1, 2] * 2 + [0, 1],
    "decode 32, mixed base/sft/dpo": [0, 1, 2] * 10 + [0, 1],
}


def _layers(rank: int, slot_rank: int, dtype: torch.dtype) -> list:
    gen = torch.Generator().manual_seed(0)
    layers = []
    for d_in, slices in BLOCK * LAYERS:
        a = tuple(torch.randn(SLOTS, 1, slot_rank, d_in, generator=gen) * 0.05 for _ in slices)
        b = tuple(torch.randn(SLOTS, 1, n, slot_rank, generator=gen) * 0.05 for n in slices)
        for t in a:
            t[:, :, rank:, :] = 0  # a rank-`rank` adapter in a `slot_rank`-wide slot, as vLLM stores it
        for t in b:
            t[:, :, :, rank:] = 0
        layers.append((d_in, slices, tuple(t.to(dtype) for t in a), tuple(t.to(dtype) for t in b)))
    return layers


def time_step(wrapper, layers: list, lora_ids: list[int], dtype: torch.dtype, repeats: int) -> float:
    """Best-of-`repeats` milliseconds for one step's LoRA work (every layer once)."""
    from vllm.lora.layers import LoRAMapping

    mapping = LoRAMapping(tuple(lora_ids), tuple(lora_ids), is_prefill=True)
    wrapper.update_metadata(mapping, [1, 2, 3, 4], SLOTS + 1, 49152)
    gen = torch.Generator().manual_seed(1)
    inputs = {d: torch.randn(len(lora_ids), d, generator=gen).to(dtype) for d in (HIDDEN, INTERMEDIATE)}
    outputs = [torch.zeros(len(lora_ids), sum(slices), dtype=dtype) for _, slices, _, _ in layers]

    def step():
        for (d_in, slices, a, b), y in zip(layers, outputs):
            wrapper.add_lora_linear(y, inputs[d_in], a, b, 1.0, slices)

    step()  # warm-up (Palate's wrapper also prepares its fp32 weights here, once per loaded adapter)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=16, help="the adapters' LoRA rank")
    parser.add_argument("--slot-rank", type=int, nargs="+", default=[16, 32], help="max_lora_rank (slot width)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (vLLM's CPU worker uses its own cores)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from server.engines.cpu_lora import PalatePunicaWrapper

    print("| batch | max_lora_rank | vLLM PunicaWrapperCPU (ms/step) | Palate (ms/step) | vLLM / Palate |")
    print("|---|---|---|---|---|")
    for slot_rank in args.slot_rank:
        layers = _layers(args.rank, slot_rank, torch.bfloat16)
        for name, ids in BATCHES.items():
            theirs = time_step(PunicaWrapperCPU(4096, 256, "cpu"), layers, ids, torch.bfloat16, args.repeats)
            ours = time_step(PalatePunicaWrapper(4096, 256, "cpu"), layers, ids, torch.bfloat16, args.repeats)
            print(f"| {name} | {slot_rank} | {theirs:.1f} | {ours:.2f} | {theirs / ours:.0f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

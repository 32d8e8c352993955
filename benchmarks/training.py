"""Training throughput: SFT and DPO step time and tokens/s on the same preference pairs, with and without
precomputed reference log-probs, as a ratio table (SFT = 1.00).

    .venv/bin/python -m benchmarks.training [--pairs 16] [--steps 4] [--batch 4] [--model models/base]
                                            [--markdown benchmarks/RESULTS.md]

Same pairs for every row: SFT trains on prompt -> chosen; DPO on prompt, chosen, rejected. Tokens are counted as
the trainer sees them (SFT: prompt + completion; DPO: prompt + chosen and prompt + rejected). The first step is a
warm-up and not timed. "precompute" is the one-off reference pass TRL runs when `precompute_ref_log_probs=true`;
"total" = precompute + steps x step time. DPO starts from a fresh LoRA with the base model as reference
(`--from base`): a reference adapter costs the same forward pass as the base, so the ratio is the same.

    .venv/bin/python -m benchmarks.training --processes [--pairs 16] [--steps 4] [--batch 4] [--markdown FILE]

runs SFT and DPO under the elastic launcher (what `palate train --nproc N` uses) with 1 and with 2 processes, CPU,
fp32, the same per-device batch, in the same run, and prints step time and samples/s (world x per-device batch /
step time) with the 2-process / 1-process ratio. The launcher gives each of several CPU processes one thread
(OMP_NUM_THREADS=1) and leaves one process torch's default.

    .venv/bin/python -m benchmarks.training --length-buckets [--pairs 64] [--steps 6] [--batch 4] [--markdown FILE]

compares random batches with `length_buckets: 8` batches (training/inputs.py `length_bucketed`) on the same rows,
SFT and DPO, the two orders in turn (random, buckets, random, buckets): step time, the share of computed tokens that
are padding, and the bucketed / random step-time ratio of each pair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self):
        self.durations: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._start)


def _token_count(tokenizer, rows: list[dict], kind: str) -> int:
    def n(messages):
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    answers = ("chosen",) if kind == "sft" else ("chosen", "rejected")
    return sum(n(row["prompt"] + row[answer]) for row in rows for answer in answers)


def run_case(kind: str, precompute: bool, model_dir: Path, rows: list[dict], steps: int, batch: int,
             extra: dict | None = None, prepared: bool = False) -> dict:
    from training.config import resolve_job
    from training.inputs import PreparedData
    from training.jobs import load_model, make_trainer
    from training.validate import ValidationReport

    output_dir = tempfile.mkdtemp(prefix="palate-bench-")  # nothing is saved there (save_strategy: no)
    overrides = {"max_steps": steps + 1, "per_device_train_batch_size": batch, "logging_steps": 1000,
                 "save_strategy": "no", "output_dir": output_dir, "max_length": 512, "warmup_steps": 0}
    if kind == "dpo":
        overrides.update(precompute_ref_log_probs=precompute, parent="base")
    overrides.update(extra or {})
    spec = resolve_job(kind, overrides=overrides)
    spec.trl.output_dir = output_dir
    train_rows = rows if prepared else ([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
                                        if kind == "sft" else [{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                               for r in rows])
    data = PreparedData(path=Path("bench"), sha256="", report=ValidationReport(Path("bench"), kind), rows=train_rows)
    model, tokenizer = load_model(spec, model_dir, None)
    timer = StepTimer()
    started = time.perf_counter()
    trainer = make_trainer(spec, model, tokenizer, data, None, [timer])
    setup = time.perf_counter() - started
    trainer.train()
    timed = timer.durations[1:]  # first step is warm-up
    step_s = sum(timed) / len(timed)
    tokens_per_row = _token_count(tokenizer, rows, kind) / len(rows) if not prepared else float("nan")
    precompute_s = setup if precompute else 0.0
    return {"job": kind.upper() + (" + precomputed ref" if precompute else ""), "step_s": step_s,
            "tokens_per_s": tokens_per_row * batch / step_s, "precompute_s": precompute_s,
            "total_s": precompute_s + step_s * steps, "setup_s": setup}


def table(results: list[dict], header: str) -> str:
    base = results[0]["step_s"]
    lines = [header, "",
             "| job | step time (s) | tokens/s | step time vs SFT | one-off precompute (s) | total for the steps (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['job']} | {r['step_s']:.2f} | {r['tokens_per_s']:.0f} | {r['step_s'] / base:.2f}x | "
                     f"{r['precompute_s']:.1f} | {r['total_s']:.1f} |")
    return "\n".join(lines)


def _worker(kind: str, out: Path, model_dir: Path, rows: list[dict], steps: int, batch: int) -> None:
    """One rank of a --processes case: time the steps; rank 0 writes the result."""
    import torch

    from training import distributed

    result = run_case(kind, False, model_dir, rows, steps, batch, extra={"use_cpu": True, "dtype": "float32"})
    world = distributed.world_size()
    result.update(world_size=world, threads=torch.get_num_threads(),
                  samples_per_s=world * batch / result["step_s"])
    if distributed.is_main():
        out.write_text(json.dumps(result))


def run_processes(kind: str, nproc: int, model_dir: Path, args) -> dict:
    """A --processes case: the benchmark's own worker under the elastic launcher, `nproc` ranks."""
    import sys
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    out = Path(tempfile.mkdtemp(prefix="palate-bench-")) / "result.json"
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"bench-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")
    elastic_launch(config, entrypoint=sys.executable)(
        "-m", "benchmarks.training", "--worker", kind, "--worker-out", str(out), "--pairs", str(args.pairs),
        "--steps", str(args.steps), "--batch", str(args.batch), "--model", str(model_dir))
    return json.loads(out.read_text())


def processes_table(results: list[dict], header: str) -> str:
    lines = [header, "",
             "| job | processes | threads each | per-device batch | effective batch | step time (s) | samples/s | "
             "samples/s vs 1 process |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    single = {r["job"]: r["samples_per_s"] for r in results if r["world_size"] == 1}
    for r in results:
        lines.append(f"| {r['job']} | {r['world_size']} | {r['threads']} | {r['batch']} | {r['world_size'] * r['batch']} "
                     f"| {r['step_s']:.2f} | {r['samples_per_s']:.2f} | {r['samples_per_s'] / single[r['job']]:.2f}x |")
    return "\n".join(lines)


def _padded_share(tokenizer, rows: list[dict], kind: str, batch: int, batches: int) -> float:
    """Share of the tokens the first `batches` batches compute that are padding (each batch pads to its longest)."""
    def n(messages):
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    real = padded = 0
    for start in range(0, batch * batches, batch):
        group = rows[start:start + batch]
        answer = "completion" if kind == "sft" else None
        lengths = [n(r["prompt"] + r[answer]) for r in group] if answer else \
            [n(r["prompt"] + r[a]) for r in group for a in ("chosen", "rejected")]
        real, padded = real + sum(lengths), padded + max(lengths) * len(lengths)
    return 1 - real / padded


def _main_length_buckets(args, model_dir: Path, rows: list[dict]) -> int:
    import random

    import torch
    from transformers import AutoTokenizer

    from training.inputs import length_bucketed

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    results = []
    for kind in ("sft", "dpo"):
        kind_rows = ([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows] if kind == "sft"
                     else [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        shuffled = list(kind_rows)
        random.Random(0).shuffle(shuffled)
        orders = {"random": shuffled, "length buckets (8)": length_bucketed(kind_rows, args.batch, 8, seed=0)}
        for repeat in range(2):
            for name, ordered in orders.items():
                result = run_case_ordered(kind, model_dir, ordered, args.steps, args.batch)
                result.update(order=name, repeat=repeat,
                              padded=_padded_share(tokenizer, ordered, kind, args.batch, args.steps + 1))
                results.append(result)
                print(f"{kind} {name} #{repeat}: {result['step_s']:.2f} s/step, padding {result['padded']:.1%}",
                      flush=True)
    lines = [f"### Length buckets vs random batches ({model_dir.name}, LoRA r=16, fp32, batch {args.batch}, "
             f"{args.steps} timed steps)", "",
             f"`python -m benchmarks.training --length-buckets --pairs {args.pairs} --steps {args.steps} --batch "
             f"{args.batch}` on cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')} UTC; the orders in turn, twice.", "",
             "| job | order | step time (s), run 1 / run 2 | padding share of computed tokens | step time vs random "
             "(pair 1 / pair 2) |", "|---|---|---:|---:|---:|"]
    for kind in ("SFT", "DPO"):
        mine = [r for r in results if r["job"] == kind]
        rand = [r for r in mine if r["order"] == "random"]
        for name in ("random", "length buckets (8)"):
            runs = [r for r in mine if r["order"] == name]
            times = " / ".join(f"{r['step_s']:.2f}" for r in runs)
            ratio = " / ".join(f"{r['step_s'] / q['step_s']:.2f}x" for r, q in zip(runs, rand))
            lines.append(f"| {kind} | {name} | {times} | {runs[0]['padded']:.1%} | {ratio} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(path.read_text().rstrip() + "\n\n" + text + "\n")
    return 0


def run_case_ordered(kind: str, model_dir: Path, rows: list[dict], steps: int, batch: int) -> dict:
    """run_case on rows already in training order (the Trainer samples them sequentially)."""
    return run_case(kind, False, model_dir, rows, steps, batch, extra={"train_sampling_strategy": "sequential"},
                    prepared=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16, help="Preference pairs used by every job.")
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per job (plus one warm-up).")
    parser.add_argument("--batch", type=int, default=4, help="Rows (pairs) per step.")
    parser.add_argument("--model", default=None, help="Base model directory (default: configs/model.yaml).")
    parser.add_argument("--markdown", default=None, help="Append the table to this Markdown file.")
    parser.add_argument("--processes", action="store_true",
                        help="Compare 1 and 2 torch.distributed CPU processes (SFT and DPO) instead.")
    parser.add_argument("--length-buckets", action="store_true",
                        help="Compare random batches with length-bucketed ones (SFT and DPO) instead.")
    parser.add_argument("--worker", choices=["sft", "dpo"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    from core.config import load_model_config
    from training.data import ensure_dataset

    model_dir = Path(args.model) if args.model else load_model_config().resolved_dir()
    pairs_path = ensure_dataset()["prefs_train"]
    rows = [json.loads(line) for line in open(pairs_path)][: args.pairs]
    if args.worker:
        _worker(args.worker, Path(args.worker_out), model_dir, rows, args.steps, args.batch)
        return 0
    if args.processes:
        return _main_processes(args, model_dir)
    if args.length_buckets:
        return _main_length_buckets(args, model_dir, rows)
    results = [run_case("sft", False, model_dir, rows, args.steps, args.batch),
               run_case("dpo", False, model_dir, rows, args.steps, args.batch),
               run_case("dpo", True, model_dir, rows, args.steps, args.batch)]
    device = "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"### Training step time ({model_dir.name}, LoRA r=16, batch {args.batch}, {args.pairs} pairs, "
              f"{args.steps} timed steps)\n\n`python -m benchmarks.training --pairs {args.pairs} --steps {args.steps} "
              f"--batch {args.batch}` on {device}, {platform.python_version()}, torch {torch.__version__}, "
              f"1-min load average at the end {load:.1f} (other jobs on the machine inflate absolute times; ratios less).")
    _print_and_append(table(results, header), args.markdown)
    return 0


def _main_processes(args, model_dir: Path) -> int:
    import torch

    results = []
    for kind in ("sft", "dpo"):
        for nproc in (1, 2):
            result = run_processes(kind, nproc, model_dir, args)
            result["batch"] = args.batch
            results.append(result)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"### Training on 1 vs 2 CPU processes ({model_dir.name}, LoRA r=16, fp32, gloo, per-device batch "
              f"{args.batch}, {args.pairs} pairs, {args.steps} timed steps)\n\n`python -m benchmarks.training "
              f"--processes --pairs {args.pairs} --steps {args.steps} --batch {args.batch}` on cpu ({os.cpu_count()} "
              f"cores), {platform.python_version()}, torch {torch.__version__}, elastic launcher (as torchrun), "
              f"{time.strftime('%Y-%m-%d')}, 1-min load average at the end {load:.1f}.")
    _print_and_append(processes_table(results, header), args.markdown)
    return 0


def _print_and_append(text: str, markdown: str | None) -> None:
    """Print a result table and, with --markdown FILE, append it to FILE (created with a title if missing)."""
    print(text)
    if markdown:
        path = Path(markdown)
        existing = path.read_text() if path.is_file() else "# Benchmark results\n"
        path.write_text(existing.rstrip() + "\n\n" + text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())

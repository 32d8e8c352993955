"""What a job needs from the torch.distributed processes it may run in (a single process is world size 1).

    rank(), world_size(), is_main()        from torch.distributed once the job's TrainingArguments set it up
    on_main_then_share(fn)                 fn() runs on rank 0 only; every rank gets its result (or rank 0's error)
    barrier()                              every rank waits for the others (no-op in one process)
    eval_plan(rows, world, batch)          how to shard the held-out split so every row counts exactly once

The job's TrainingArguments initialise the process group (accelerate's PartialState: MULTI_CPU over gloo with
`use_cpu`, NCCL on GPUs) before any of these are called.
"""

from __future__ import annotations

from dataclasses import dataclass


class MainRankFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed preparing the job; rank 0 reports the error itself."""


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    dist = _dist()
    if dist:
        dist.barrier()


def on_main_then_share(fn):
    """Run `fn()` on rank 0 alone and return its (picklable) result on every rank. If it raises, rank 0 re-raises
    the error and the other ranks raise MainRankFailed, so no rank goes on with a half-prepared job."""
    dist = _dist()
    if dist is None:
        return fn()
    box: list = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except BaseException as exc:  # shared first, then re-raised: the others must not wait forever
            error = exc
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    status, value = box[0]
    if status == "error":
        raise MainRankFailed(f"rank 0 failed: {value}")
    return value


@dataclass(frozen=True)
class EvalPlan:
    """How the held-out split is scored across `world` ranks: each rank takes `batch` rows a step, and the split is
    repeated `repeats` times so that world x batch divides the rows scored. Then no rank is padded with duplicated
    rows (accelerate's even_batches would repeat some, and TRL's DPO reward metrics count them), every step scores
    the same number of rows, and the averaged metrics weigh every held-out row exactly the same."""

    rows: int
    world: int
    batch: int
    repeats: int

    def record(self) -> dict:
        return {"rows": self.rows, "world_size": self.world, "per_device_eval_batch_size": self.batch,
                "repeats": self.repeats, "rows_scored": self.rows * self.repeats}


def eval_plan(rows: int, world: int, batch: int) -> EvalPlan:
    """Each row once when `world` divides `rows` (batch: the largest divisor of rows/world up to `batch`); otherwise
    the split `world` times over (batch: the largest divisor of rows up to `batch`), so each row counts `world` times
    - the same weight for every row, at `world` times the compute."""
    if world <= 1 or rows == 0:
        return EvalPlan(rows, world, batch, 1)
    repeats = 1 if rows % world == 0 else world
    per_rank = rows * repeats // world
    best = max(d for d in range(1, min(batch, per_rank) + 1) if per_rank % d == 0 and (rows * repeats) % (d * world) == 0)
    return EvalPlan(rows, world, best, repeats)

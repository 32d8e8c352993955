"""`palate train ... --nproc N`: the same job under N torch.distributed processes, started by the standard launchers.

    launch_job(kind, flags, nproc, accelerate_config=None) -> exit code

- Without `--accelerate-config`: torch's elastic launcher, the one `torchrun --standalone --nproc_per_node N
  --max_restarts 0` runs. Every rank runs `python -m core.cli train <kind> <flags>`. On a machine without CUDA the
  ranks train on CPU over gloo in fp32: the launcher adds `--use_cpu true` (accelerate then picks MULTI_CPU) and
  `--dtype float32` (gloo has no bf16 collectives); `--bf16 true` or a bf16 `--dtype` is refused there.
  (`accelerate launch --cpu --num_processes N` starts one process only, accelerate#2741, so it is not used on CPU.)
- With `--accelerate-config fsdp|zero2|zero3|PATH`: `accelerate launch --config_file PATH --num_processes N -m
  core.cli train ...`. Those configs are for GPUs; on a machine without CUDA they are refused before anything starts.

If any rank dies, the launcher stops the others (SIGTERM, then SIGKILL) and this returns non-zero after printing
which rank died and how. The job registers from rank 0 only after every rank finished training, so nothing is
registered; the run directory keeps the last checkpoint and the same command resumes from it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from core.config import CONFIG_DIR, ConfigError

ACCELERATE_CONFIGS = {"fsdp": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml"}
# Flags the launcher itself consumes; they never reach the ranks' TRL parser.
LAUNCH_FLAGS = ("--nproc", "--accelerate-config")


def split_launch_flags(flags: list[str]) -> tuple[int | None, str | None, list[str]]:
    """(nproc, accelerate_config, the remaining job flags) from a `palate train` command line."""
    nproc, accelerate_config, rest = None, None, []
    items = iter(flags)
    for item in items:
        name, _, inline = item.partition("=")
        if name in LAUNCH_FLAGS:
            value = inline or next(items, None)
            if value is None or value.startswith("--"):
                raise ConfigError(f"{name} needs a value (e.g. {name} {'2' if name == '--nproc' else 'fsdp'}).")
            if name == "--nproc":
                if not value.isdigit() or int(value) < 1:
                    raise ConfigError(f"--nproc {value}: give a whole number of processes, 1 or more.")
                nproc = int(value)
            else:
                accelerate_config = value
        else:
            rest.append(item)
    return nproc, accelerate_config, rest


def inside_launch() -> bool:
    """Whether this process is a rank started by a launcher (so it must not launch again)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def accelerate_config_path(value: str) -> Path:
    """A name from ACCELERATE_CONFIGS (configs/accelerate/) or a path to an accelerate config file."""
    path = CONFIG_DIR / "accelerate" / ACCELERATE_CONFIGS[value] if value in ACCELERATE_CONFIGS else Path(value)
    if not path.is_file():
        raise ConfigError(f"--accelerate-config {value}: no such file; use one of {sorted(ACCELERATE_CONFIGS)} "
                          "(configs/accelerate/) or a path to an accelerate config.")
    return path


def _flag_value(flags: list[str], name: str) -> str | None:
    for i, item in enumerate(flags):
        if item == name and i + 1 < len(flags):
            return flags[i + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    return None


def cpu_rank_flags(flags: list[str]) -> list[str]:
    """The flags each CPU rank runs with: use_cpu and fp32 added; bf16 refused, naming the flag."""
    if str(_flag_value(flags, "--bf16")).lower() in {"true", "1", "yes"}:
        raise ConfigError("--bf16 true: several CPU processes talk over gloo, which has no bf16 collectives; "
                          "train in fp32 (--bf16 false) or on GPUs.")
    dtype = _flag_value(flags, "--dtype")
    if dtype not in (None, "float32"):
        raise ConfigError(f"--dtype {dtype}: several CPU processes train in float32 (gloo has no bf16 collectives).")
    extra = ["--use_cpu", "true"]
    if dtype is None:
        extra += ["--dtype", "float32"]
    return [*flags, *extra]


def rank_command(kind: str, flags: list[str]) -> list[str]:
    """What every rank runs (after the interpreter): the ordinary single-process job."""
    return ["-m", "core.cli", "train", kind, *flags]


def launch_job(kind: str, flags: list[str], nproc: int, accelerate_config: str | None = None) -> int:
    """Run `palate train <kind> <flags>` under `nproc` ranks; returns the exit code (see the module docstring)."""
    import torch

    has_cuda = torch.cuda.is_available()
    if accelerate_config is not None:
        path = accelerate_config_path(accelerate_config)
        if not has_cuda:
            raise ConfigError(f"--accelerate-config {accelerate_config} ({path.name}) is a GPU launch config and this "
                              "machine has no CUDA GPU; use --nproc N alone to train on CPU processes.")
        return _accelerate_launch(kind, flags, nproc, path)
    rank_flags = flags if has_cuda else cpu_rank_flags(flags)
    return _elastic_launch(kind, rank_flags, nproc)


def _accelerate_launch(kind: str, flags: list[str], nproc: int, path: Path) -> int:
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    command = [accelerate, "launch", "--config_file", str(path), "--num_processes", str(nproc),
               *rank_command(kind, flags)]
    print(f"palate train {kind}: {' '.join(command)}", flush=True)
    code = subprocess.call(command)
    if code:
        print(f"palate train {kind}: accelerate launch exited with {code} (its output names the failed rank); "
              "nothing was registered; the same command resumes from the last checkpoint.", file=sys.stderr)
    return code


def _elastic_launch(kind: str, flags: list[str], nproc: int) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun --standalone: a local c10d rendezvous on a free port, one node, no restarts (a dead rank ends the run).
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"palate-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5,
                          start_method="spawn")
    print(f"palate train {kind}: {nproc} processes (torch.distributed elastic launcher, as torchrun --standalone "
          f"--nproc_per_node {nproc}); ranks run: python {' '.join(rank_command(kind, flags))}", flush=True)
    try:
        elastic_launch(config, entrypoint=sys.executable)(*rank_command(kind, flags))
    except ChildFailedError as exc:
        print(f"palate train {kind}: {describe_failures(exc.failures, nproc)}", file=sys.stderr)
        return failure_exit_code(exc.failures)
    return 0


def describe_failures(failures: dict, world_size: int) -> str:
    """One line naming each failed rank, how it ended, and what that means for the run."""
    parts = []
    for rank, failure in sorted(failures.items()):
        code = failure.exitcode
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
        parts.append(f"rank {rank} of {world_size} {how} (pid {failure.pid})")
    return ("; ".join(parts) + ". The launcher stopped the other ranks; nothing was registered. Run the same command "
            "again to resume from the last checkpoint.")


def failure_exit_code(failures: dict) -> int:
    """The first failed rank's exit code, or 128 + signal for a rank killed by a signal."""
    code = failures[min(failures)].exitcode
    return 128 - code if code < 0 else (code or 1)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"

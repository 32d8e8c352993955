"""Live progress of training jobs, shared by the trainer (writes) and the server (reads, for the arena).

A running job's rank 0 keeps one small JSON file per adapter name in the registry it trains into:
`<registry>/.training/<name>.json` with its state (`starting`, `training`, `evaluating`, `registered`, `failed`),
step, max_steps, last loss, elapsed seconds, an ETA, the version it will register and its process id. The registry
ignores the directory (names are folders with versions; `.training` is neither). A reader on the same machine
turns a file whose process is gone before it finished into `stopped`, so a killed run never shows as training.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

PROGRESS_DIR = ".training"
ACTIVE = ("starting", "training", "evaluating")


def progress_path(registry_root: Path | str, name: str) -> Path:
    return Path(registry_root) / PROGRESS_DIR / f"{name}.json"


def write_progress(path: Path, **fields) -> dict:
    """Replace the file at `path` atomically with `fields` plus the writer's pid, host and time."""
    record = {**fields, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_progress(registry_root: Path | str) -> list[dict]:
    """Every job's latest record, newest first; an active record whose process has died reads `stopped`."""
    directory = Path(registry_root) / PROGRESS_DIR
    if not directory.is_dir():
        return []
    jobs = []
    for path in directory.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now, or damaged: the next poll reads it
        if record.get("state") in ACTIVE and record.get("host") == socket.gethostname() \
                and not _alive(int(record.get("pid", 0))):
            record["state"] = "stopped"
        jobs.append(record)
    return sorted(jobs, key=lambda r: r.get("updated", 0), reverse=True)


def describe(record: dict) -> str:
    """One line for a person: 'sft@1: training, step 12/64, loss 1.34, about 6 min left'."""
    who = f"{record.get('name', '?')}@{record.get('version', '?')}"
    state = record.get("state", "?")
    if state == "training":
        parts = [f"step {record.get('step', 0)}/{record.get('max_steps', '?')}"]
        if record.get("loss") is not None:
            parts.append(f"loss {record['loss']:.2f}")
        if record.get("eta_s") is not None:
            parts.append(f"about {max(1, round(record['eta_s'] / 60))} min left")
        return f"{who}: training, " + ", ".join(parts)
    if state == "registered":
        return f"{who}: trained and registered (a server with --watch loads it)"
    if state == "failed":
        return f"{who}: training failed ({record.get('error', 'see the training log')})"
    if state == "stopped":
        return f"{who}: training stopped before it finished (run the same command again to resume)"
    return f"{who}: {state}"

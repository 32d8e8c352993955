"""Engine processes die with the process that started them, and a new server says so when it finds some that did not.

vLLM runs its engine core (and its workers) in child processes. Killed by SIGKILL, a server cannot stop them: they
would live on under PID 1 holding the model and the KV cache. So:

- `claim_engine(tag)` runs in the process that is about to start an engine (`VllmEngine.start`): it puts its pid
  (PALATE_SERVER_PID) and a tag naming what it serves (PALATE_ENGINE_TAG, the adapter registry) in the environment
  that the engine's processes inherit.
- `register()` is a `vllm.general_plugins` entry point (pyproject.toml): vLLM calls it in every process it starts.
  In a process below a Palate owner (PALATE_SERVER_PID set and not this process) it starts a watchdog thread that
  SIGKILLs the process as soon as its parent is gone (the kernel re-parents orphans, so `getppid()` changes), and
  leaves a small record (pid, parent, tag, start time) in a per-user runtime directory. A watchdog rather than
  prctl(PR_SET_PDEATHSIG): that signal fires when the parent *thread* that started the child exits, which would
  kill a healthy engine started from a short-lived thread.
- `stale_engines(tag)` reads those records: live processes with our tag whose parent is no longer the one they
  started under are engines that outlived their server (the watchdog could not act: e.g. the process was frozen, or
  it predates this module). The server logs them at start-up, with their pids and memory, and does not touch them.

Outside a Palate owner (vLLM's own server, another program) `register()` does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

OWNER_ENV = "PALATE_SERVER_PID"
TAG_ENV = "PALATE_ENGINE_TAG"
POLL_S = 0.25

log = logging.getLogger("palate.engine.lifeline")


def runtime_dir() -> Path:
    """Per-user directory for the records of engine processes (local to this machine, like the processes)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"palate-engines-{os.getuid()}"


def plugin_registered() -> bool:
    """Whether vLLM will find `register` (the package's entry points are installed, not shadowed by stale ones)."""
    from importlib.metadata import entry_points

    return any(e.value == f"{__name__}:register" for e in entry_points(group="vllm.general_plugins"))


def claim_engine(tag: str | None = None) -> None:
    """Mark this process as the owner of the engine processes it is about to start (they inherit the marks)."""
    os.environ[OWNER_ENV] = str(os.getpid())
    if tag is not None:
        os.environ[TAG_ENV] = tag
    if not getattr(claim_engine, "_checked", False):
        claim_engine._checked = True
        if not plugin_registered():
            log.warning("the vllm.general_plugins entry point %s:register is not installed (reinstall Palate: "
                        "pip install -e .); engine processes would outlive a server killed with SIGKILL", __name__)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a live process, from /proc; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # nothing left to serve: free the memory now
        threading.Event().wait(POLL_S)


def register() -> None:
    """vLLM general plugin: tie this engine process's life to its parent's (see the module docstring)."""
    owner = os.environ.get(OWNER_ENV)
    if not owner or owner == str(os.getpid()) or getattr(register, "_armed", False):
        return
    register._armed = True  # vLLM may load plugins more than once per process
    parent = os.getppid()
    if parent == 1 or _proc_stat(parent) is None:
        os.kill(os.getpid(), signal.SIGKILL)  # the parent died before we got here
    threading.Thread(target=_watch_parent, args=(parent,), name="palate-lifeline", daemon=True).start()
    stat = _proc_stat(os.getpid())
    try:
        directory = runtime_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "parent": parent, "owner": int(owner), "tag": os.environ.get(TAG_ENV),
                  "start": stat[2] if stat else None}
        (directory / f"{os.getpid()}.json").write_text(json.dumps(record))
    except OSError:  # the record only serves the stale-process warning; the watchdog is what matters
        log.debug("could not write the engine process record", exc_info=True)


@dataclass(frozen=True)
class StaleEngine:
    pid: int
    owner: int
    rss_bytes: int


def stale_engines(tag: str | None) -> list[StaleEngine]:
    """Engine processes with `tag` that outlived the process they started under. Records of processes that are
    gone are removed on the way."""
    found = []
    directory = runtime_dir()
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z" or stat[2] != record.get("start"):  # gone, or its pid was reused
            path.unlink(missing_ok=True)
            continue
        if record.get("tag") == tag and stat[1] != record.get("parent"):
            found.append(StaleEngine(pid, int(record.get("owner") or 0), _rss_bytes(pid)))
    return found


def warn_if_stale(tag: str | None) -> list[StaleEngine]:
    """Log (warning) the engine processes of `tag` that an earlier server left behind; return them."""
    stale = stale_engines(tag)
    if stale:
        pids = " ".join(str(s.pid) for s in stale)
        gib = sum(s.rss_bytes for s in stale) / 2**30
        log.warning("found %d stale vLLM engine process(es) of an earlier server on this registry (%s): pids %s, "
                    "%.1f GiB resident. They outlived their server; stop them (kill %s) to free the memory.",
                    len(stale), tag, pids, gib, pids)
    return stale

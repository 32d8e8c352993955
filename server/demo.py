"""`palate demo`'s background training: `palate train all --if-missing` as a child process that dies with its parent.

The child has its own session, so a terminal's Ctrl-C reaches the server only; however the server ends, the child
then gets one SIGINT (training saves a checkpoint and stops; a second SIGINT would abort it without one), and
SIGINT (Linux: on the parent's death, through prctl PDEATHSIG) if the server is killed outright. A second
`palate demo` resumes from the checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from core.child_process import interrupt_when_parent_dies


@contextlib.contextmanager
def background_training(registry_root: Path, profile: str, flags: list[str], log_path: Path | str,
                        stop_timeout_s: float = 60.0) -> Iterator[subprocess.Popen]:
    """Run `palate train all --profile P --if-missing --registry ROOT -- FLAGS` with output appended to log_path;
    on exit, interrupt it (checkpoint) and wait, then kill it if it does not stop."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "core.cli", "train", "all", "--profile", profile, "--if-missing",
               "--registry", str(registry_root)]
    if flags:
        command += ["--", *flags]
    with open(log_path, "ab") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=interrupt_when_parent_dies)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

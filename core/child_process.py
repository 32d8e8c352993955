"""Child processes that stop with their parent: `interrupt_when_parent_dies` is a `preexec_fn` for subprocess.Popen.

Linux only (prctl PR_SET_PDEATHSIG): the child gets SIGINT - a training job's Ctrl-C, which saves a checkpoint -
when the thread that started it exits, even if the parent was killed outright. Start such children from the main
thread. Elsewhere it does nothing, and the caller's own signal handling is what stops the child.
"""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def interrupt_when_parent_dies() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    except OSError:  # not glibc Linux
        pass

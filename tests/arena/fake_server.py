"""Run the real Palate app (server.app.create_app, real vote store, real UI) around the FakeEngine under uvicorn.

    python -m tests.arena.fake_server --tmp DIR --port 8765 [--database-url URL] [--mount-arena] [--delay 0.02]

Used by tests that need a real server process (concurrent clients, SIGKILL, browser) without the minute-long
vLLM start. Prints "READY <url>" once it accepts connections.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port, wait_until_up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--mount-arena", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    import uvicorn

    from tests.arena.fakes import FakeEngine, make_app, make_config

    logging.basicConfig(level=logging.WARNING)
    # Durability tests drive many clients from one loopback address: admission control (tested on its own in
    # tests/server/test_admission.py) would rightly refuse most of them.
    config = make_config(Path(args.tmp), args.database_url, mount_arena=args.mount_arena,
                         admission={"enabled": False})
    app = make_app(config, FakeEngine(delay_s=args.delay))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


class FakeServerProcess:
    """Start/stop `python -m tests.arena.fake_server` as a subprocess; `kill()` sends SIGKILL."""

    def __init__(self, tmp: Path, database_url: str | None = None, mount_arena: bool = False, delay: float = 0.0,
                 port: int | None = None):
        self.tmp, self.database_url, self.mount_arena, self.delay = tmp, database_url, mount_arena, delay
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> "FakeServerProcess":
        cmd = [sys.executable, "-m", "tests.arena.fake_server", "--tmp", str(self.tmp), "--port", str(self.port),
               "--delay", str(self.delay)]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        if self.mount_arena:
            cmd.append("--mount-arena")
        root = Path(__file__).resolve().parents[2]
        self.log = open(self.tmp / f"server-{self.port}.log", "ab")
        self.process = subprocess.Popen(cmd, cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONPATH": str(root)})
        log_path = self.tmp / f"server-{self.port}.log"
        try:
            wait_until_up(f"{self.url}/v1/arena/info", self.process, log_path, "fake server", timeout_s, 0.2)
        except RuntimeError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing - what a crash looks like."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


if __name__ == "__main__":
    main()

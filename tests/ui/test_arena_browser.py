"""The arena in a real browser (headless Debian Chromium via Playwright): type, stream, vote, reveal, count.

`test_arena_in_browser_fake_engine` runs the real app and UI around the fake engine (seconds);
`test_arena_in_browser_live_server` runs against the real `palate serve` (vLLM, base model, trained adapters) and
saves the README screenshot to docs/arena.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from tests.ui.browser import drive_arena, skip_reason

pytestmark = pytest.mark.browser

SCREENSHOT = PROJECT_ROOT / "docs" / "arena.png"


@pytest.fixture(autouse=True)
def _needs_browser():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


def test_arena_in_browser_fake_engine(tmp_path: Path):
    from tests.arena.fake_server import FakeServerProcess

    server = FakeServerProcess(tmp_path, mount_arena=True, delay=0.05).start()
    try:
        result = drive_arena(f"{server.url}/arena/", "Describe a loft in Old Town",
                             screenshot=tmp_path / "arena.png")
    finally:
        server.stop()
    assert result["after"] == result["before"] + 1 == 1
    assert result["answers"]["A"] and result["answers"]["B"] and result["answers"]["A"] != result["answers"]["B"]
    assert result["locked_while_streaming"]
    assert re.search(r"A was (base|sft@1|dpo@1), B was (base|sft@1|dpo@1)", result["reveal"])


@pytest.mark.e2e
def test_arena_in_browser_live_server(live_server):
    result = drive_arena(f"{live_server.url}/arena/",
                         "Write a two-sentence listing for a 1-bed condo in Riverside with in-unit laundry.",
                         screenshot=SCREENSHOT, timeout_ms=240_000)
    assert result["after"] == result["before"] + 1
    assert result["answers"]["A"].strip() and result["answers"]["B"].strip()
    assert re.search(r"A was (base|sft@\d+|dpo@\d+), B was (base|sft@\d+|dpo@\d+)", result["reveal"])
    assert SCREENSHOT.stat().st_size < 300_000

"""Drive the arena UI in headless Debian Chromium through Playwright: shared by the browser tests."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")


def skip_reason() -> str | None:
    if chromium_path() is None:
        return ("Debian's chromium is not installed; `python -m tests.setup_browser` installs it where apt-get and "
                "root are available")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def vote_count(page) -> int:
    text = page.locator("#lb-summary").inner_text()
    match = re.search(r"(\d+) votes", text)
    return int(match.group(1)) if match else -1


def drive_arena(arena_url: str, prompt: str, screenshot: Path | None = None, timeout_ms: int = 120_000) -> dict:
    """Open the arena, read the leaderboard count, type a prompt, wait for both panes to stream and finish, check
    the vote buttons were locked meanwhile, vote A, read the reveal, and read the count again."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(arena_url, wait_until="load")
            page.locator("#prompt textarea").wait_for(timeout=60_000)
            page.get_by_role("tab", name="Leaderboard").click()
            expect(page.locator("#lb-summary")).to_contain_text("votes", timeout=60_000)
            before = vote_count(page)
            page.get_by_role("tab", name="Arena").click()
            expect(page.locator("#vote-a")).to_be_disabled()
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#send").click()
            # While generating, the panes fill and the vote buttons stay locked.
            expect(page.locator("#pane-a textarea")).not_to_have_value("", timeout=timeout_ms)
            locked_while_streaming = page.locator("#vote-a").is_disabled() and page.locator("#vote-b").is_disabled()
            expect(page.locator("#vote-a")).to_be_enabled(timeout=timeout_ms)
            answers = {s: page.locator(f"#pane-{s.lower()} textarea").input_value() for s in "AB"}
            page.locator("#vote-a").click()
            expect(page.locator("#reveal")).to_contain_text("Revealed", timeout=30_000)
            reveal = page.locator("#reveal").inner_text()
            expect(page.locator("#vote-a")).to_be_disabled()
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            page.get_by_role("tab", name="Leaderboard").click()
            expect(page.locator("#lb-summary")).to_contain_text(f"{before + 1} votes", timeout=30_000)
            after = vote_count(page)
            return {"before": before, "after": after, "answers": answers, "reveal": reveal,
                    "locked_while_streaming": locked_while_streaming}
        finally:
            browser.close()

"""Drive the arena UI in headless Debian Chromium through Playwright: shared by the browser tests."""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


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


@contextmanager
def browser_page(viewport: dict = DESKTOP):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport=viewport)
        finally:
            browser.close()


def vote_count(page) -> int:
    text = page.locator("#lb-summary").inner_text()
    match = re.search(r"(\d+) votes", text)
    return int(match.group(1)) if match else -1


def people_vote_count(page) -> int:
    """All votes from people the leaderboard knows of, rated or not (a battle with an answer cut off by the length
    limit is stored but not rated)."""
    match = re.search(r"All votes: (\d+) from people", page.locator("#lb-summary").inner_text())
    return int(match.group(1)) if match else 0


def leaderboard_count(page, arena_url: str) -> int:
    """Open the Leaderboard through its link (`?leaderboard`) and read how many votes it rates."""
    from playwright.sync_api import expect

    page.goto(f"{arena_url.rstrip('/')}/?leaderboard", wait_until="load")
    expect(page.locator("#lb-summary")).to_contain_text("votes", timeout=60_000)
    return vote_count(page)


def pane_answers(page, pane: str) -> list[str]:
    """The assistant messages shown in a chat pane, oldest first."""
    # Gradio's Chatbot marks each message element with data-testid set to its role ("user" / "bot").
    return [t.strip() for t in page.locator(f"#{pane} [data-testid='bot']").all_inner_texts()]


def in_viewport(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return bool(box) and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= size["height"]


def send_battle(page, text: str, turn: int, timeout_ms: int) -> None:
    """Send `text` with Enter and wait until turn `turn` is on both panes and voting is open again."""
    from playwright.sync_api import expect

    page.locator("#prompt textarea").fill(text)
    page.locator("#prompt textarea").press("Enter")  # Enter sends
    for pane in ("#pane-a", "#pane-b"):
        expect(page.locator(f"{pane} [data-testid='user']")).to_have_count(turn, timeout=timeout_ms)
    expect(page.locator("#stop")).to_be_disabled(timeout=timeout_ms)  # the turn has finished streaming
    expect(page.locator("#vote-a")).to_be_enabled(timeout=timeout_ms)


def drive_arena(arena_url: str, prompt: str, screenshot: Path | None = None, timeout_ms: int = 120_000,
                viewport: dict = DESKTOP, follow_up: str | None = "Now make it one sentence.") -> dict:
    """Open the Battle tab, read the leaderboard count, send a prompt (Enter), check the vote buttons were locked
    while streaming, send a follow-up turn, vote A after turn 2 with a reason, read the reveal and the pane labels,
    and read the count again."""
    from playwright.sync_api import expect

    with browser_page(viewport) as page:
        before = leaderboard_count(page, arena_url)  # the deep link: at 390 px the tab sits in Gradio's overflow menu
        before_people = people_vote_count(page)
        page.goto(arena_url, wait_until="load")
        page.locator("#prompt textarea").wait_for(timeout=60_000)
        prompt_visible_on_load = in_viewport(page, "#prompt textarea")
        expect(page.locator("#vote-a")).to_be_disabled()
        page.locator("#prompt textarea").fill(prompt)
        page.locator("#prompt textarea").press("Enter")
        expect(page.locator("#stop")).to_be_enabled(timeout=timeout_ms)
        locked_while_streaming = page.locator("#vote-a").is_disabled() and page.locator("#vote-b").is_disabled()
        expect(page.locator("#vote-a")).to_be_enabled(timeout=timeout_ms)
        turns = 1
        if follow_up:
            send_battle(page, follow_up, 2, timeout_ms)
            turns = 2
        answers = {s: pane_answers(page, f"pane-{s.lower()}") for s in "AB"}
        answers_visible_while_voting = in_viewport(page, "#pane-a") and in_viewport(page, "#vote-a")
        page.locator("#why").click()
        page.locator("#reasons label:has-text('sticks to the facts')").click()
        page.locator("#vote-a").click()
        expect(page.locator("#reveal")).to_contain_text("Revealed", timeout=30_000)
        reveal = page.locator("#reveal").inner_text()
        labels = {s: page.locator(f"#pane-{s.lower()}").inner_text().split("\n")[0] for s in "AB"}
        expect(page.locator("#vote-a")).to_be_disabled()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        after = leaderboard_count(page, arena_url)
        after_people = people_vote_count(page)
        summary = page.locator("#lb-summary").inner_text()
        return {"before": before, "after": after, "before_people": before_people, "after_people": after_people,
                "summary": summary, "answers": answers, "reveal": reveal, "labels": labels,
                "turns": turns, "locked_while_streaming": locked_while_streaming,
                "prompt_visible_on_load": prompt_visible_on_load,
                "answers_visible_while_voting": answers_visible_while_voting}

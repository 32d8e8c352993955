"""UI helpers that need no browser: deep links, word diff, plain words, the waiting ticker."""

from __future__ import annotations

import asyncio

from ui.app import mode_from_query
from ui.battle_tab import reveal_words, side_notes
from ui.compare_tab import default_models
from ui.context import ticking
from ui.diff import word_diff_html
from ui.leaderboard_view import standings_rows, summary_markdown


def test_deep_links_select_the_mode():
    assert mode_from_query({"compare": ""}) == "compare"
    assert mode_from_query({"mode": "chat"}) == "chat"
    assert mode_from_query({"leaderboard": ""}) == "leaderboard"
    assert mode_from_query({}) == "battle" and mode_from_query(None) == "battle"
    assert mode_from_query({"mode": "nonsense"}) == "battle"


def test_word_diff_marks_added_and_missing_words():
    html = word_diff_html("a bright two-bed condo", "a sunny two-bed condo <b>")
    assert html == "a <del>bright</del> <ins>sunny</ins> two-bed condo <ins>&lt;b&gt;</ins>"


def test_plain_words_not_flag_codes():
    notes = side_notes({"A": {"finish_reason": "stop"}, "B": {"finish_reason": "length"}})
    assert notes == "Answer B stopped at the length limit."
    reveal = {"contestants": {"A": {"model": "sft@1"}, "B": {"model": "base"}}, "winner": "A",
              "flags": ["identity_leak:B", "truncated:B"]}
    words = reveal_words(reveal)
    assert "A was **sft@1**, B was **base**" in words and "truncated:B" not in words
    assert "Answer B named a model, so this vote is not counted in the ratings." in words


def test_compare_defaults_to_base_sft_dpo_when_served():
    assert default_models(["base", "dpo", "dpo@1", "sft", "sft@1"]) == ["base", "sft", "dpo"]
    assert default_models(["base"]) == ["base"]


def test_leaderboard_rows_and_summary_show_exclusions_and_lc():
    board = {"source": "people", "total_votes": 4, "bootstrap_rounds": 100, "min_votes": 10,
             "votes_by_source": {"people": 6, "simulated": 3}, "excluded": {"identity_leak": 2, "error": 0},
             "standings": [{"rank": 1, "rank_ub": 1, "contestant": "sft@1", "rating": 1095.4, "ci_low": 1000,
                            "ci_high": 1200, "rating_lc": 1010.2, "vs_parent": 190.8, "parent": "base", "votes": 4,
                            "wins": 3, "losses": 1, "ties": 0, "provisional": True}]}
    assert standings_rows(board)[0][:6] == [1, "sft@1", 1095, "1000 – 1200", 1010, "+191 vs base"]
    summary = summary_markdown(board)
    assert "6 from people, 3 from simulated judges" in summary and "2 because an answer named a model" in summary


def test_ticking_yields_ticks_while_waiting_and_then_the_items():
    async def slow():
        await asyncio.sleep(0.35)
        yield "first"

    async def collect():
        return [item async for item in ticking(slow(), interval_s=0.1)]

    items = asyncio.run(collect())
    assert items[-1] == "first" and items[:-1] and all(i is None for i in items[:-1])


def test_chatbot_values_become_plain_messages():
    from ui.context import plain_messages

    gradio_value = [{"role": "user", "content": [{"type": "text", "text": "Hi"}], "metadata": None},
                    {"role": "assistant", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "!"}]}]
    assert plain_messages(gradio_value) == [{"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Hello!"}]
    assert plain_messages([{"role": "user", "content": "plain"}]) == [{"role": "user", "content": "plain"}]
    assert plain_messages(None) == []


def test_training_line_shows_active_jobs_and_recent_failures_only():
    from ui.app import training_markdown

    now = 10_000.0
    view = {"jobs": [
        {"name": "dpo", "state": "training", "updated": now, "summary": "dpo@1: training, step 3/18"},
        {"name": "sft", "state": "registered", "updated": now - 60, "summary": "sft@1: trained and registered"},
        {"name": "old", "state": "failed", "updated": now - 7200, "summary": "old@1: training failed (x)"},
        {"name": "new", "state": "failed", "updated": now - 60, "summary": "new@1: training failed (y)"}]}
    text = training_markdown(view, now)
    assert "dpo@1: training, step 3/18" in text and "new@1: training failed (y)" in text
    assert "sft@1" not in text and "old@1" not in text
    assert training_markdown({"jobs": [view["jobs"][1]]}, now) == ""  # nothing training: no line at all


def test_send_enter_and_regenerate_are_never_dropped_while_an_answer_is_closing():
    """Gradio's default trigger_mode ("once") drops a press made while the event before it is still pending, which
    it is for a moment after the answer's last frame (Send enabled, votes open): a quick follow-up was lost."""
    from ui.app import build_arena_ui

    demo = build_arena_ui("http://127.0.0.1:9")
    ids = {block._id: getattr(block, "elem_id", None) for block in demo.blocks.values()}
    modes = {}
    for dep in demo.config["dependencies"]:
        for target, event in dep["targets"]:
            modes[(ids.get(target), event)] = dep["trigger_mode"]
    sending = [("send", "click"), ("prompt", "submit"), ("regenerate", "click"), ("chat-send", "click"),
               ("chat-prompt", "submit"), ("compare-send", "click"), ("compare-prompt", "submit")]
    assert {key: modes.get(key) for key in sending} == {key: "always_last" for key in sending}

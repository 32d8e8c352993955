"""The Gradio arena: blind A/B battles that stream, four vote buttons, the reveal, a leaderboard and the export.

It talks to a Palate server over HTTP only (ui/client.py). Mounted in the server (`server_url=None`) it calls the
server it runs in, found from the request's socket; standalone (`palate arena --server URL`) it calls URL.
The page's Gradio session id is the judge id sent with battles and votes (the server stores only its sha256).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core.arena_config import ArenaConfig
from ui.client import ArenaClient, ArenaClientError
from ui.leaderboard_view import STANDING_COLUMNS, matrix_rows, ratings_figure, standings_rows, summary_markdown

CHOICES = [("A is better", "A", "vote-a"), ("B is better", "B", "vote-b"), ("Tie", "tie", "vote-tie"),
           ("Both are bad", "both_bad", "vote-both-bad")]


def server_url_for(request: gr.Request | None, fallback: str = "http://127.0.0.1:8000") -> str:
    """The URL of the server this UI is mounted in: the socket the request arrived on (loopback for 0.0.0.0)."""
    raw = getattr(request, "request", None) if request is not None else None
    server = raw.scope.get("server") if raw is not None else None
    if server and server[1]:
        host = server[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "", None) else "[::1]" if host == "::" else host
        return f"http://{host}:{server[1]}"
    return fallback


def _vote_buttons(enabled: bool) -> list[gr.Button]:
    return [gr.Button(interactive=enabled) for _ in CHOICES]


def _reveal_markdown(reveal: dict, choice: str) -> str:
    a, b = reveal["contestants"]["A"], reveal["contestants"]["B"]
    chosen = {"A": "A", "B": "B", "tie": "a tie", "both_bad": "both bad"}[choice]
    flags = f"  \nflags: {', '.join(reveal['flags'])}" if reveal["flags"] else ""
    return f"### Revealed: A was **{a['model']}**, B was **{b['model']}**  \nYou voted {chosen}. Thank you!{flags}"


def build_arena_ui(server_url: str | None, arena_config: ArenaConfig | None = None) -> gr.Blocks:
    """Build the arena Blocks. `server_url` None: call the server the UI is mounted in."""
    config = arena_config or ArenaConfig()

    def client(request: gr.Request | None) -> ArenaClient:
        return ArenaClient(server_url or server_url_for(request))

    def judge_of(request: gr.Request | None) -> str | None:
        return getattr(request, "session_hash", None) if request is not None else None

    async def run_battle(prompt: str, system: str, max_tokens: float, temperature: float, request: gr.Request):
        texts = {"A": "", "B": ""}
        battle_id = None
        if not (prompt or "").strip():
            yield "", "", None, "Type a prompt first.", "", *_vote_buttons(False), gr.Button(interactive=True)
            return
        yield "", "", None, "Generating both answers…", "", *_vote_buttons(False), gr.Button(interactive=False)
        finished: dict[str, str] = {}
        try:
            async for event in client(request).battle_events(
                    prompt, system=system, judge=judge_of(request), max_tokens=int(max_tokens) if max_tokens else None,
                    temperature=temperature):
                kind = event["type"]
                if kind == "battle":
                    battle_id = event["battle_id"]
                elif kind == "delta":
                    texts[event["side"]] += event["text"]
                elif kind == "side_done":
                    finished[event["side"]] = event.get("message") or event["finish_reason"]
                elif kind == "done":
                    notes = "; ".join(f"{s}: {m}" for s, m in sorted(finished.items()) if m not in ("stop",))
                    status = "Both answers are in: which is better?" + (f" ({notes})" if notes else "")
                    yield texts["A"], texts["B"], battle_id, status, "", *_vote_buttons(True), \
                        gr.Button(interactive=False)
                    return
                yield texts["A"], texts["B"], battle_id, "Generating both answers…", "", *_vote_buttons(False), \
                    gr.Button(interactive=False)
        except ArenaClientError as exc:
            yield texts["A"], texts["B"], None, f"**Error:** {exc.message}", "", *_vote_buttons(False), \
                gr.Button(interactive=True)
            return
        except Exception as exc:  # noqa: BLE001 - connection trouble: say so, keep the page usable
            yield texts["A"], texts["B"], None, f"**Error:** the server could not be reached ({type(exc).__name__}).", \
                "", *_vote_buttons(False), gr.Button(interactive=True)
            return
        yield texts["A"], texts["B"], None, "**Error:** the stream ended early; start a new round.", "", \
            *_vote_buttons(False), gr.Button(interactive=True)

    def make_vote(choice: str):
        async def vote(battle_id: str | None, request: gr.Request):
            if not battle_id:
                return "No battle to vote on.", "", *_vote_buttons(False)
            try:
                result = await client(request).vote(battle_id, choice, judge=judge_of(request))
            except ArenaClientError as exc:
                return f"**Error:** {exc.message}", "", *_vote_buttons(exc.status == 409 and "finish" in exc.message)
            return "Vote stored.", _reveal_markdown(result, choice), *_vote_buttons(False)
        return vote

    async def refresh_leaderboard(request: gr.Request):
        try:
            board = await client(request).leaderboard()
        except Exception as exc:  # noqa: BLE001
            return f"**Leaderboard unavailable:** {getattr(exc, 'message', type(exc).__name__)}", [], \
                gr.Dataframe(value=[]), None
        header, rows = matrix_rows(board)
        return summary_markdown(board), standings_rows(board), gr.Dataframe(value=rows, headers=header), \
            ratings_figure(board)

    async def export(request: gr.Request):
        try:
            result = await client(request).export()
        except ArenaClientError as exc:
            return None, f"**Export failed:** {exc.message}"
        out = Path(tempfile.mkdtemp(prefix="palate-export-")) / f"arena-pairs-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        out.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in result["rows"]))
        s = result["summary"]
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none"
        return str(out), (f"**{s['rows']} DPO pairs** from {s['voted_battles']} voted battles · dropped: {dropped} · "
                          f"chosen longer: {s['chosen_longer_rate']} · left side won: {s['left_side_win_rate']}")

    def new_round():
        return "", "", "", None, "", "", *_vote_buttons(False), gr.Button(interactive=True)

    with gr.Blocks(title="Palate arena") as demo:
        gr.Markdown("# Palate arena\nTwo anonymous models answer your prompt. Pick the better answer; the names "
                    "are revealed after your vote, and your votes become new preference data.")
        battle_state = gr.State(None)
        with gr.Tab("Arena"):
            with gr.Row():
                pane_a = gr.Textbox(label="Model A", lines=12, max_lines=30, interactive=False, elem_id="pane-a")
                pane_b = gr.Textbox(label="Model B", lines=12, max_lines=30, interactive=False, elem_id="pane-b")
            status = gr.Markdown("Type a prompt and press Send.", elem_id="status")
            with gr.Row():
                vote_buttons = [gr.Button(label, interactive=False, elem_id=elem) for label, _, elem in CHOICES]
            reveal = gr.Markdown("", elem_id="reveal")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe a listing…", elem_id="prompt")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                new = gr.Button("New round", elem_id="new-round")
            with gr.Accordion("System message and sampling (same for both sides)", open=False):
                system = gr.Textbox(label="System message", lines=2)
                max_tokens = gr.Slider(16, 1024, value=config.default_max_tokens, step=16, label="max tokens")
                temperature = gr.Slider(0.0, 1.5, value=config.temperature, step=0.05, label="temperature")
            if config.example_prompts:
                gr.Examples(examples=[[p] for p in config.example_prompts], inputs=[prompt], label="Examples")
        with gr.Tab("Leaderboard", elem_id="tab-leaderboard"):
            lb_summary = gr.Markdown("", elem_id="lb-summary")
            lb_table = gr.Dataframe(headers=STANDING_COLUMNS, interactive=False, elem_id="lb-table")
            gr.Markdown("Win rates (ties count half) with Wilson 95% intervals:")
            lb_matrix = gr.Dataframe(interactive=False, elem_id="lb-matrix")
            lb_plot = gr.Plot(elem_id="lb-plot")
            refresh = gr.Button("Refresh", elem_id="lb-refresh")
        with gr.Tab("Export"):
            gr.Markdown("Export every vote as DPO pairs (TRL conversational format) for `palate train dpo --data`.")
            export_button = gr.Button("Export votes as DPO pairs", elem_id="export")
            export_summary = gr.Markdown("")
            export_file = gr.File(label="pairs.jsonl")

        battle_outputs = [pane_a, pane_b, battle_state, status, reveal, *vote_buttons, send]
        lb_outputs = [lb_summary, lb_table, lb_matrix, lb_plot]
        battle_inputs = [prompt, system, max_tokens, temperature]
        send.click(run_battle, battle_inputs, battle_outputs)
        prompt.submit(run_battle, battle_inputs, battle_outputs)
        for button, (_, choice, _) in zip(vote_buttons, CHOICES):
            button.click(make_vote(choice), [battle_state], [status, reveal, *vote_buttons]).then(
                refresh_leaderboard, None, lb_outputs)
        new.click(new_round, None, [prompt, pane_a, pane_b, battle_state, status, reveal, *vote_buttons, send])
        refresh.click(refresh_leaderboard, None, lb_outputs)
        export_button.click(export, None, [export_file, export_summary])
        demo.load(refresh_leaderboard, None, lb_outputs)
    return demo


def launch(server_url: str, host: str = "127.0.0.1", port: int = 7860, arena_config: ArenaConfig | None = None,
           **kwargs: Any) -> None:
    """Run the arena on its own, against the Palate server at `server_url`."""
    build_arena_ui(server_url, arena_config).launch(server_name=host, server_port=port, **kwargs)

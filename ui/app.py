"""The Gradio arena: Battle (blind A/B, multi-turn, votes), Compare (named, side by side), Chat (one model),
Leaderboard and Export, as tabs; each mode is deep-linkable: /arena?compare, /arena?chat, /arena?leaderboard.

It talks to a Palate server over HTTP only (core/arena_client.py). Mounted in the server (`server_url=None`) it calls the
server it runs in, found from the request's socket; standalone (`palate arena --server URL`) it calls URL.
The page's Gradio session id is the judge id sent with battles and votes (the server stores only its sha256).
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from core.arena_config import ArenaConfig
from core.training_progress import ACTIVE
from ui.battle_tab import CHOICES, build_battle_tab  # noqa: F401 - CHOICES is part of the UI's public surface
from ui.chat_tab import build_chat_tab
from ui.compare_tab import build_compare_tab, default_models
from ui.context import CSS, NOTICE, UiContext, server_url_for  # noqa: F401 - server_url_for: kept for callers
from ui.export_tab import build_export_tab
from ui.leaderboard_view import (SOURCE_CHOICES, STANDING_COLUMNS, matrix_rows, ratings_figure, standings_rows,
                                 summary_markdown)

MODES = ("battle", "compare", "chat", "leaderboard", "export")
TRAINING_POLL_S = 5.0
RECENT_S = 3600.0  # a failed or stopped job is shown for an hour


def training_markdown(view: dict, now: float) -> str:
    """The progress line for jobs training into the served registry: active ones, and recent failures."""
    lines = [job["summary"] for job in view.get("jobs", [])
             if job["state"] in ACTIVE
             or (job["state"] in ("failed", "stopped") and now - job.get("updated", 0) < RECENT_S)]
    if not lines:
        return ""
    return "**Training** (adapters join the arena when registered):\n" + "\n".join(f"- {line}" for line in lines)


def model_pickers(served: list[str]) -> tuple[gr.CheckboxGroup, gr.Dropdown]:
    """Compare's and Chat's model pickers for what the server serves now."""
    return (gr.CheckboxGroup(choices=served, value=default_models(served)),
            gr.Dropdown(choices=served, value="base" if "base" in served else served[0]))


def mode_from_query(params: Any) -> str:
    """The tab a URL asks for: `?compare` or `?mode=compare`; Battle otherwise."""
    keys = dict(params or {})
    if keys.get("mode") in MODES:
        return keys["mode"]
    return next((mode for mode in MODES if mode in keys), "battle")


class _PageHandlers:
    """The page-wide handlers: the page load, the training poll, the leaderboard refresh."""

    def __init__(self, ctx: UiContext):
        self.ctx = ctx

    async def refresh_leaderboard(self, source: str, request: gr.Request):
        try:
            board = await self.ctx.client(request).leaderboard(source or "people")
        except Exception as exc:  # noqa: BLE001
            return f"**Leaderboard unavailable:** {getattr(exc, 'message', type(exc).__name__)}", [], \
                gr.Dataframe(value=[]), None
        header, rows = matrix_rows(board)
        return summary_markdown(board), standings_rows(board), gr.Dataframe(value=rows, headers=header), \
            ratings_figure(board)

    async def on_load(self, request: gr.Request):
        """Select the tab the URL names; fill the model pickers from what the server serves now."""
        served = ["base"]
        try:
            served = (await self.ctx.client(request).info())["served_models"] or served
        except Exception:  # noqa: BLE001 - the pickers keep 'base'; the tabs say what fails when used
            pass
        mode = mode_from_query(getattr(request, "query_params", None))
        return (gr.Tabs(selected=mode), *model_pickers(served), served)

    async def poll_training(self, known: list[str], request: gr.Request):
        """Every few seconds: the training line; the model pickers only when what the server serves changed."""
        client = self.ctx.client(request)
        try:
            line = training_markdown(await client.training(), time.time())
            served = (await client.info())["served_models"] or known
        except Exception:  # noqa: BLE001 - a server restarting: keep the page as it is until the next poll
            return gr.skip(), gr.skip(), gr.skip(), known
        if served == known:
            return line, gr.skip(), gr.skip(), known
        return (line, *model_pickers(served), served)


def build_leaderboard_tab(handlers: _PageHandlers) -> tuple[gr.Radio, list]:
    """Lay out the Leaderboard tab (inside a gr.Tab) and wire its refresh; returns the source picker and outputs."""
    source = gr.Radio(SOURCE_CHOICES, value="people", label="Votes from", elem_id="lb-source")
    lb_summary = gr.Markdown("", elem_id="lb-summary")
    lb_table = gr.Dataframe(headers=STANDING_COLUMNS, interactive=False, elem_id="lb-table")
    gr.Markdown("Win rates (ties count half) with Wilson 95% intervals:")
    lb_matrix = gr.Dataframe(interactive=False, elem_id="lb-matrix")
    lb_plot = gr.Plot(elem_id="lb-plot")
    refresh = gr.Button("Refresh", elem_id="lb-refresh")
    outputs = [lb_summary, lb_table, lb_matrix, lb_plot]
    refresh.click(handlers.refresh_leaderboard, [source], outputs)
    source.change(handlers.refresh_leaderboard, [source], outputs)
    return source, outputs


def build_arena_ui(server_url: str | None, arena_config: ArenaConfig | None = None,
                   api_key: str | None = None) -> gr.Blocks:
    """Build the arena Blocks. `server_url` None: call the server the UI is mounted in."""
    ctx = UiContext(server_url, arena_config or ArenaConfig(), api_key)
    handlers = _PageHandlers(ctx)
    with gr.Blocks(title="Palate arena") as demo:
        gr.Markdown("# Palate arena\nCompare a base model with its SFT and DPO adapters: blind battles, named "
                    "comparisons, or a chat.", elem_classes=["palate-header"])
        gr.Markdown(NOTICE, elem_classes=["palate-notice"], elem_id="notice")
        training = gr.Markdown("", elem_id="training")
        served_state = gr.State([])
        with gr.Tabs(selected="battle", elem_id="modes") as tabs:
            with gr.Tab("Battle", id="battle", elem_id="tab-battle"):
                build_battle_tab(ctx)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                compare_models = build_compare_tab(ctx)
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                chat_model = build_chat_tab(ctx)
            with gr.Tab("Leaderboard", id="leaderboard", elem_id="tab-leaderboard") as lb_tab:
                source, lb_outputs = build_leaderboard_tab(handlers)
            with gr.Tab("Export", id="export", elem_id="tab-export"):
                build_export_tab(ctx)
        lb_tab.select(handlers.refresh_leaderboard, [source], lb_outputs)  # votes cast since the page loaded show up
        demo.load(handlers.on_load, None, [tabs, compare_models, chat_model, served_state])
        gr.Timer(TRAINING_POLL_S).tick(handlers.poll_training, [served_state], [training, compare_models, chat_model,
                                                                                 served_state])
        demo.load(handlers.refresh_leaderboard, [source], lb_outputs)
    return demo


def launch(server_url: str, host: str = "127.0.0.1", port: int = 7860, arena_config: ArenaConfig | None = None,
           **kwargs: Any) -> None:
    """Run the arena on its own, against the Palate server at `server_url`."""
    build_arena_ui(server_url, arena_config).launch(server_name=host, server_port=port, css=CSS, **kwargs)

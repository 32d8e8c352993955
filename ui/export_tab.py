"""The Export tab: the votes as training rows, for whoever holds the admin token (unless the server opens it)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from core.arena_client import ArenaClientError
from core.vote_export import ExportResult, write_export
from ui.context import UiContext


def export_words(result: dict) -> str:
    s = result["summary"]
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["dropped"].items() if v) or "none"
    if result.get("format") == "kto":
        return (f"**{s['rows']} KTO rows** ({s['desirable']} good answers, {s['undesirable']} bad ones) from "
                f"{s['voted_battles']} voted battles · left out: {dropped}")
    return (f"**{s['rows']} DPO pairs** from {s['voted_battles']} voted battles ({s.get('edited_rows', 0)} with an "
            f"edited winner) · left out: {dropped} · the chosen answer is the longer one in "
            f"{s['chosen_longer_rate']} of pairs · the left side won {s['left_side_win_rate']} of decisive votes")


def build_export_tab(ctx: UiContext) -> None:
    gr.Markdown("The export holds every stored prompt and answer, so it needs the server's **admin token** (unless "
                "the server was configured with `export_access: open`). DPO pairs feed `palate train dpo --data`; "
                "KTO rows (both-bad votes included) feed TRL's KTOTrainer.")
    token = gr.Textbox(label="Admin token", type="password", elem_id="export-token")
    kind = gr.Radio([("DPO pairs", "dpo"), ("KTO rows", "kto")], value="dpo", label="Format", elem_id="export-format")
    button = gr.Button("Export votes", elem_id="export")
    summary = gr.Markdown("", elem_id="export-summary")
    file = gr.File(label="rows.jsonl", elem_id="export-file")

    async def export(admin_token: str, fmt: str, request: gr.Request):
        try:
            result = await ctx.client(request).export(admin_token=(admin_token or "").strip() or None, format=fmt)
        except ArenaClientError as exc:
            if exc.status == 401:
                return None, f"**The export needs the admin token.** {exc.message}"
            return None, f"**Export failed:** {exc.message}"
        out = Path(tempfile.mkdtemp(prefix="palate-export-")) / f"arena-{fmt}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        write_export(ExportResult(result["rows"], result["summary"]), out)  # as `palate votes export` writes it
        return str(out), export_words(result)

    button.click(export, [token, kind], [file, summary])

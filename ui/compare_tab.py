"""The Compare tab: 2-3 named models answer the same prompt with the same sampling and seed, in one engine batch,
streaming side by side; a toggle shows word-level differences. No votes (a named comparison is not blind)."""

from __future__ import annotations

import time

import gradio as gr

from core.arena_client import ArenaClientError
from ui.context import ENTER_HINT, FINISH_WORDS, SEND_TRIGGER, UiContext, ticking, waiting_words
from ui.diff import diff_panel_html
from ui.sampling import sampling_body, sampling_controls

MAX_PANES = 3


def default_models(served: list[str]) -> list[str]:
    """base, sft, dpo when served (the mission's comparison), else the first served names."""
    preferred = [m for m in ("base", "sft", "dpo") if m in served]
    return (preferred or served)[:MAX_PANES]


def frame(names, answers, prompt_text, words, busy, toggle) -> tuple:
    """Every output of the tab (panes, status, diff, stored texts, Compare, Stop) for one moment."""
    out = []
    for i in range(MAX_PANES):
        if i < len(names):
            messages = [{"role": "user", "content": prompt_text},
                        {"role": "assistant", "content": answers[i]}] if prompt_text else []
            out.append(gr.Chatbot(value=messages, label=names[i], visible=True))
        else:
            out.append(gr.Chatbot(value=[], visible=False))
    panel = diff_panel_html(names, answers) if toggle and not busy else ""
    return (*out, words, gr.HTML(value=panel, visible=bool(panel)), list(answers) + [names],
            gr.Button(interactive=not busy), gr.Button(interactive=busy))


def toggle_diff(toggle, stored):
    if not stored or len(stored) < 2:
        return gr.HTML(visible=False)
    names, answers = stored[-1], stored[:-1]
    panel = diff_panel_html(names, answers) if toggle else ""
    return gr.HTML(value=panel, visible=bool(panel))


def _ending(event: dict, name: str) -> str | None:
    """What to say about a model whose answer did not simply stop (cut at the length limit, failed, no turn)."""
    if event["finish_reason"] == "stop":
        return None
    return f"{name}: {event['message']}" if event.get("message") else \
        f"{name} {FINISH_WORDS.get(event['finish_reason'], 'ended')}"


class _Compare:
    """The Compare button's handler: streams every model's answer into its pane."""

    def __init__(self, ctx: UiContext):
        self.ctx = ctx

    async def run(self, chosen, text, toggle, sys, mt, temp, sd, request: gr.Request):
        chosen, text = list(chosen or []), (text or "").strip()
        if not 2 <= len(chosen) <= MAX_PANES or not text:
            yield frame(chosen, [""] * len(chosen), "", f"Pick 2 to {MAX_PANES} models and type a prompt.", False,
                        False)
            return
        answers, client, started, got = [""] * len(chosen), self.ctx.client(request), time.monotonic(), False
        notes, seed_used = {}, None
        yield frame(chosen, answers, text, "Waiting for the first words…", True, False)
        try:
            async for event in ticking(client.compare_events(chosen, text, judge=self.ctx.judge(request),
                                                                **sampling_body(sys, mt, temp, sd))):
                kind = event["type"] if event is not None else None
                if kind == "delta":
                    answers[event["index"]] += event["text"]
                    got = True
                elif kind == "model_done" and (note := _ending(event, chosen[event["index"]])):
                    notes[chosen[event["index"]]] = note
                elif kind == "compare":
                    seed_used = event["seed"]
                    continue
                elif kind == "done":
                    extra = " ".join(f"{note.rstrip('.')}." for note in notes.values())
                    yield frame(chosen, answers, text, f"Done in {time.monotonic() - started:.0f} s, same sampling "
                                                       f"and seed ({seed_used}) for all. {extra}", False, toggle)
                    return
                words = await waiting_words(client, time.monotonic() - started, got)
                yield frame(chosen, answers, text, words, True, False)
        except ArenaClientError as exc:
            yield frame(chosen, answers, text, f"**Could not compare:** {exc.message}", False, False)
        except Exception as exc:  # noqa: BLE001
            yield frame(chosen, answers, text, f"**The server could not be reached** ({type(exc).__name__}).", False,
                        False)


def build_compare_tab(ctx: UiContext) -> gr.CheckboxGroup:
    """Lay out the Compare tab; returns the model picker (the page load fills its choices)."""
    models = gr.CheckboxGroup(choices=["base"], value=["base"], label=f"Models (2 to {MAX_PANES})",
                              elem_id="compare-models")
    with gr.Row(equal_height=True):
        panes = [gr.Chatbot(label=f"Model {i + 1}", elem_id=f"compare-{i}", height=320, buttons=["copy"],
                            visible=i < 2, elem_classes=["palate-pane"]) for i in range(MAX_PANES)]
    status = gr.Markdown("Pick models, type a prompt: they answer it side by side, named.", elem_id="compare-status")
    show_diff = gr.Checkbox(label="Show word differences", value=False, elem_id="compare-diff-toggle")
    diff = gr.HTML("", elem_id="compare-diff", visible=False)
    prompt = gr.Textbox(label="Your prompt", lines=1, max_lines=8, elem_id="compare-prompt")
    gr.Markdown(ENTER_HINT, elem_classes=["palate-hint"])
    with gr.Row():
        send = gr.Button("Compare", variant="primary", elem_id="compare-send")
        stop = gr.Button("Stop", variant="stop", elem_id="compare-stop", interactive=False)
    system, max_tokens, temperature, seed = sampling_controls(ctx.config, "compare")
    texts = gr.State([])

    run = _Compare(ctx).run
    outputs = [*panes, status, diff, texts, send, stop]
    inputs = [models, prompt, show_diff, system, max_tokens, temperature, seed]
    runs = [send.click(run, inputs, outputs, **SEND_TRIGGER), prompt.submit(run, inputs, outputs, **SEND_TRIGGER)]
    stop.click(lambda: ("Stopped: every answer was aborted.", gr.Button(interactive=True),
                        gr.Button(interactive=False)), None, [status, send, stop], cancels=runs)
    show_diff.change(toggle_diff, [show_diff, texts], [diff])
    return models

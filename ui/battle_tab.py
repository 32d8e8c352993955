"""The Battle tab: blind A/B, multi-turn, vote after any turn with optional reasons, reveal on the panes, edit the
winner, Regenerate, Stop. Sampling and system controls are absent: in blind mode the server's defaults apply.

State (`gr.State`, per browser tab): {"id": latest turn's battle id, "first_prompt", "turns", "voted",
"finished", "winner"}; the panes hold each side's conversation as chat messages.
"""

from __future__ import annotations

import time

import gradio as gr

from core.arena_config import REASON_TAGS
from ui.client import ArenaClientError
from ui.context import (ENTER_HINT, FINISH_WORDS, FLAG_WORDS, REASON_WORDS, UiContext, plain_messages, ticking,
                        waiting_words)

CHOICES = [("A is better", "A", "vote-a"), ("B is better", "B", "vote-b"), ("Tie", "tie", "vote-tie"),
           ("Both are bad", "both_bad", "vote-both-bad")]
CHOICE_WORDS = {"A": "A is better", "B": "B is better", "tie": "a tie", "both_bad": "both are bad"}


def _votes(enabled: bool) -> list:
    return [gr.Button(interactive=enabled) for _ in CHOICES]


def side_notes(finished: dict[str, dict]) -> str:
    """Plain words for anything unusual about the sides: 'Answer B stopped at the length limit.'"""
    notes = []
    for side in "AB":
        event = finished.get(side, {})
        reason = event.get("finish_reason")
        if reason and reason != "stop":
            notes.append(f"Answer {side} {FINISH_WORDS.get(reason, reason)}.")
    return " ".join(notes)


def reveal_words(reveal: dict) -> str:
    a, b = reveal["contestants"]["A"]["model"], reveal["contestants"]["B"]["model"]
    lines = [f"### Revealed: A was **{a}**, B was **{b}**",
             f"You voted: {CHOICE_WORDS[reveal['winner']]}. Thank you!"]
    flags = []
    for flag in reveal.get("flags", []):
        name, _, side = flag.partition(":")
        flags.append(f"Answer {side} {FLAG_WORDS.get(name, name)}.")
    if flags:
        lines.append(" ".join(sorted(set(flags))))
    return "  \n".join(lines)


def build_battle_tab(ctx: UiContext) -> None:
    """Lay out the Battle tab and wire its events (call inside a gr.Tab)."""
    state = gr.State(None)
    with gr.Row(equal_height=True):
        pane_a = gr.Chatbot(label="Model A", elem_id="pane-a", height=340, buttons=["copy"],
                            elem_classes=["palate-pane"], placeholder="Answer A appears here.")
        pane_b = gr.Chatbot(label="Model B", elem_id="pane-b", height=340, buttons=["copy"],
                            elem_classes=["palate-pane"], placeholder="Answer B appears here.")
    status = gr.Markdown("Type a prompt: two anonymous models answer it side by side.", elem_id="status")
    with gr.Row(elem_id="vote-row"):
        vote_buttons = [gr.Button(label, interactive=False, elem_id=elem, variant="secondary", min_width=80)
                        for label, _, elem in CHOICES]
    with gr.Accordion("Why? (optional, stored with your vote)", open=False, elem_id="why"):
        reasons = gr.CheckboxGroup([(REASON_WORDS[t], t) for t in REASON_TAGS], label="Reasons",
                                   elem_id="reasons")
        comment = gr.Textbox(label="Comment", lines=1, max_lines=4, elem_id="comment")
    reveal = gr.Markdown("", elem_id="reveal")
    with gr.Group(visible=False) as edit_group:
        edit_box = gr.Textbox(label="Improve the winning answer (optional): your edit becomes the preferred answer "
                                    "in the training data", lines=4, max_lines=12, elem_id="edit-box")
        edit_save = gr.Button("Save my edit", elem_id="edit-save")
    prompt = gr.Textbox(label="Your prompt", lines=1, max_lines=8, elem_id="prompt", autofocus=True,
                        placeholder="Describe a listing… (a follow-up continues both conversations)")
    gr.Markdown(ENTER_HINT, elem_classes=["palate-hint"])
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="send", min_width=80)
        stop = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False, min_width=80)
        regenerate = gr.Button("Regenerate", elem_id="regenerate", interactive=False, min_width=80)
        new = gr.Button("New battle", elem_id="new-round", min_width=80)
    if ctx.config.example_prompts:
        gr.Examples(examples=[[p] for p in ctx.config.example_prompts], inputs=[prompt], label="Examples")

    outputs = [pane_a, pane_b, state, status, reveal, edit_group, *vote_buttons, send, stop, regenerate, prompt]

    def frame(a, b, st, words, *, votes=False, busy=False, reveal_md="", edit=False, prompt_value=None,
              names=("Model A", "Model B")):
        return (gr.Chatbot(value=a, label=names[0]), gr.Chatbot(value=b, label=names[1]), st, words, reveal_md,
                gr.Group(visible=edit), *_votes(votes),
                gr.Button(interactive=not busy), gr.Button(interactive=busy),
                gr.Button(interactive=not busy and bool(st and st.get("first_prompt"))),
                gr.Textbox() if prompt_value is None else gr.Textbox(value=prompt_value))

    async def run(text: str, st: dict | None, a: list, b: list, request: gr.Request, *, fresh: bool = False):
        text, a, b = (text or "").strip(), plain_messages(a), plain_messages(b)
        if not text:
            yield frame(a, b, st, "Type a prompt first.", votes=bool(st and st.get("finished") and
                                                                       not st.get("voted")))
            return
        follow_up = bool(st and st.get("finished") and not st.get("voted") and not fresh)
        if not follow_up:
            a, b = [], []
            st = {"id": None, "first_prompt": text, "turns": 0, "voted": False, "finished": False}
        a = a + [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        b = b + [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        client, started, finished, got_text = ctx.client(request), time.monotonic(), {}, False
        st = dict(st, finished=False)
        yield frame(a, b, st, "Waiting for the first words…", busy=True, prompt_value="")
        events = client.battle_events(text, judge=ctx.judge(request),
                                      **({"continue_from": st["id"]} if follow_up else {}))
        try:
            async for event in ticking(events):
                if event is None or event["type"] in ("battle", "delta"):
                    if event and event["type"] == "battle":
                        st["id"] = event["battle_id"]
                    elif event:
                        pane = a if event["side"] == "A" else b
                        pane[-1] = {"role": "assistant", "content": pane[-1]["content"] + event["text"]}
                        got_text = True
                    words = await waiting_words(client, time.monotonic() - started, got_text) \
                        if event is None or not got_text else f"Writing… {time.monotonic() - started:.0f} s"
                    yield frame(a, b, st, words, busy=True)
                elif event["type"] == "side_done":
                    finished[event["side"]] = event
                elif event["type"] == "done":
                    st = dict(st, finished=True, turns=st["turns"] + 1)
                    notes = side_notes(finished)
                    yield frame(a, b, st, f"Both answers are in ({time.monotonic() - started:.0f} s). Which is "
                                          f"better? Vote now, or send a follow-up to continue both conversations."
                                          + (f" {notes}" if notes else ""), votes=True)
                    return
        except ArenaClientError as exc:
            yield frame(a, b, st if follow_up else None, f"**Could not start:** {exc.message}")
            return
        except Exception as exc:  # noqa: BLE001 - connection trouble: say so, keep the page usable
            yield frame(a, b, None, f"**The server could not be reached** ({type(exc).__name__}); try again.")
            return
        yield frame(a, b, None, "**The answers stopped early**; send again or press Regenerate.")

    async def send_fn(text, st, a, b, request: gr.Request):
        async for out in run(text, st, a, b, request):
            yield out

    async def regenerate_fn(st, a, b, request: gr.Request):
        async for out in run((st or {}).get("first_prompt", ""), st, a, b, request, fresh=True):
            yield out

    def stopped(st, a, b):
        a, b = plain_messages(a), plain_messages(b)
        st = dict(st or {}, finished=False)
        return frame(a, b, dict(st, id=None) if st else None,
                     "Stopped: both answers were aborted. Press Regenerate to rerun the prompt, or type a new one.")

    def make_vote(choice: str):
        async def vote(st, tags, note, a, b, request: gr.Request):
            a, b = plain_messages(a), plain_messages(b)
            if not st or not st.get("id") or not st.get("finished"):
                return frame(a, b, st, "There is no finished battle to vote on.")
            try:
                result = await ctx.client(request).vote(st["id"], choice, judge=ctx.judge(request), reasons=tags,
                                                        comment=note)
            except ArenaClientError as exc:
                return frame(a, b, st, f"**Vote not stored:** {exc.message}", votes=exc.status != 409)
            models = {s: result["contestants"][s]["model"] for s in "AB"}
            st = dict(st, voted=True, winner=choice)
            winner_text = (a if choice == "A" else b)[-1]["content"] if choice in ("A", "B") else ""
            out = frame(a, b, st, "Vote stored. Type a new prompt for a new battle, or press Regenerate to rerun "
                                  "this one.", reveal_md=reveal_words(result), edit=choice in ("A", "B"),
                        names=(f"A: {models['A']}", f"B: {models['B']}"))
            return (*out, gr.Textbox(value=winner_text))
        return vote

    async def save_edit(st, text, request: gr.Request):
        if not st or not st.get("voted"):
            return "Vote first; then you can improve the winning answer."
        try:
            await ctx.client(request).edit(st["id"], text, judge=ctx.judge(request))
        except ArenaClientError as exc:
            return f"**Edit not stored:** {exc.message}"
        return "Your edit is stored: it is the preferred answer in the next export."

    def new_battle():
        return frame([], [], None, "Type a prompt: two anonymous models answer it side by side.")

    inputs = [prompt, state, pane_a, pane_b]
    runs = [send.click(send_fn, inputs, outputs), prompt.submit(send_fn, inputs, outputs),
            regenerate.click(regenerate_fn, [state, pane_a, pane_b], outputs)]
    stop.click(stopped, [state, pane_a, pane_b], outputs, cancels=runs)
    for button, (_, choice, _) in zip(vote_buttons, CHOICES):
        button.click(make_vote(choice), [state, reasons, comment, pane_a, pane_b], [*outputs, edit_box])
    edit_save.click(save_edit, [state, edit_box], [status])
    new.click(new_battle, None, outputs)

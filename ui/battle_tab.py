"""The Battle tab: blind A/B, multi-turn, vote after any turn with optional reasons, reveal on the panes, edit the
winner, Regenerate, Stop. Sampling and system controls are absent: in blind mode the server's defaults apply.

State (`gr.State`, per browser tab): {"id": latest turn's battle id, "first_prompt", "turns", "voted",
"finished", "winner"}; the panes hold each side's conversation as chat messages.
"""

from __future__ import annotations

import time

import gradio as gr

from core.arena_config import REASON_TAGS
from core.arena_client import ArenaClientError
from ui.context import (ENTER_HINT, FINISH_WORDS, FLAG_WORDS, REASON_WORDS, SEND_TRIGGER, UiContext, plain_messages,
                        ticking, waiting_words)

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


class _Widgets:
    """The Battle tab's components, laid out by `__init__` (inside a gr.Tab)."""

    def __init__(self, ctx: UiContext):
        self.state = gr.State(None)
        with gr.Row(equal_height=True):
            self.pane_a = gr.Chatbot(label="Model A", elem_id="pane-a", height=340, buttons=["copy"],
                                     elem_classes=["palate-pane"], placeholder="Answer A appears here.")
            self.pane_b = gr.Chatbot(label="Model B", elem_id="pane-b", height=340, buttons=["copy"],
                                     elem_classes=["palate-pane"], placeholder="Answer B appears here.")
        self.status = gr.Markdown("Type a prompt: two anonymous models answer it side by side.", elem_id="status")
        with gr.Row(elem_id="vote-row"):
            self.vote_buttons = [gr.Button(label, interactive=False, elem_id=elem, variant="secondary", min_width=80)
                                 for label, _, elem in CHOICES]
        with gr.Accordion("Why? (optional, stored with your vote)", open=False, elem_id="why"):
            self.reasons = gr.CheckboxGroup([(REASON_WORDS[t], t) for t in REASON_TAGS], label="Reasons",
                                            elem_id="reasons")
            self.comment = gr.Textbox(label="Comment", lines=1, max_lines=4, elem_id="comment")
        self.reveal = gr.Markdown("", elem_id="reveal")
        with gr.Group(visible=False) as self.edit_group:
            self.edit_box = gr.Textbox(label="Improve the winning answer (optional): your edit becomes the preferred "
                                             "answer in the training data", lines=4, max_lines=12, elem_id="edit-box")
            self.edit_save = gr.Button("Save my edit", elem_id="edit-save")
        self.prompt = gr.Textbox(label="Your prompt", lines=1, max_lines=8, elem_id="prompt", autofocus=True,
                                 placeholder="Describe a listing… (a follow-up continues both conversations)")
        gr.Markdown(ENTER_HINT, elem_classes=["palate-hint"])
        with gr.Row():
            self.send = gr.Button("Send", variant="primary", elem_id="send", min_width=80)
            self.stop = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False, min_width=80)
            self.regenerate = gr.Button("Regenerate", elem_id="regenerate", interactive=False, min_width=80)
            self.new = gr.Button("New battle", elem_id="new-round", min_width=80)
        if ctx.config.example_prompts:
            gr.Examples(examples=[[p] for p in ctx.config.example_prompts], inputs=[self.prompt], label="Examples")
        # What every handler returns, in this order (`frame`).
        self.outputs = [self.pane_a, self.pane_b, self.state, self.status, self.reveal, self.edit_group,
                        *self.vote_buttons, self.send, self.stop, self.regenerate, self.prompt]


def frame(a, b, st, words, *, votes=False, busy=False, reveal_md="", edit=False, prompt_value=None,
          names=("Model A", "Model B")) -> tuple:
    """Every output of the tab (`_Widgets.outputs`) for one moment of a battle."""
    return (gr.Chatbot(value=a, label=names[0]), gr.Chatbot(value=b, label=names[1]), st, words, reveal_md,
            gr.Group(visible=edit), *_votes(votes),
            gr.Button(interactive=not busy), gr.Button(interactive=busy),
            gr.Button(interactive=not busy and bool(st and st.get("first_prompt"))),
            gr.Textbox() if prompt_value is None else gr.Textbox(value=prompt_value))


class _Handlers:
    """The tab's event handlers; each returns (or yields) a `frame`."""

    def __init__(self, ctx: UiContext):
        self.ctx = ctx

    async def run(self, text: str, st: dict | None, a: list, b: list, request: gr.Request, *, fresh: bool = False):
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
        client, started, finished, got_text = self.ctx.client(request), time.monotonic(), {}, False
        st = dict(st, finished=False)
        yield frame(a, b, st, "Waiting for the first words…", busy=True, prompt_value="")
        events = client.battle_events(text, judge=self.ctx.judge(request),
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

    async def send(self, text, st, a, b, request: gr.Request):
        async for out in self.run(text, st, a, b, request):
            yield out

    async def regenerate(self, st, a, b, request: gr.Request):
        async for out in self.run((st or {}).get("first_prompt", ""), st, a, b, request, fresh=True):
            yield out

    @staticmethod
    def stopped(st, a, b):
        a, b = plain_messages(a), plain_messages(b)
        st = dict(st or {}, finished=False)
        return frame(a, b, dict(st, id=None) if st else None,
                     "Stopped: both answers were aborted. Press Regenerate to rerun the prompt, or type a new one.")

    def vote_for(self, choice: str):
        async def vote(st, tags, note, a, b, request: gr.Request):
            a, b = plain_messages(a), plain_messages(b)
            if not st or not st.get("id") or not st.get("finished"):
                return frame(a, b, st, "There is no finished battle to vote on.")
            try:
                result = await self.ctx.client(request).vote(st["id"], choice, judge=self.ctx.judge(request),
                                                             reasons=tags, comment=note)
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

    async def save_edit(self, st, text, request: gr.Request):
        if not st or not st.get("voted"):
            return "Vote first; then you can improve the winning answer."
        try:
            await self.ctx.client(request).edit(st["id"], text, judge=self.ctx.judge(request))
        except ArenaClientError as exc:
            return f"**Edit not stored:** {exc.message}"
        return "Your edit is stored: it is the preferred answer in the next export."

    @staticmethod
    def new_battle():
        return frame([], [], None, "Type a prompt: two anonymous models answer it side by side.")


def build_battle_tab(ctx: UiContext) -> None:
    """Lay out the Battle tab and wire its events (call inside a gr.Tab)."""
    w, h = _Widgets(ctx), _Handlers(ctx)
    inputs = [w.prompt, w.state, w.pane_a, w.pane_b]
    runs = [w.send.click(h.send, inputs, w.outputs, **SEND_TRIGGER),
            w.prompt.submit(h.send, inputs, w.outputs, **SEND_TRIGGER),
            w.regenerate.click(h.regenerate, [w.state, w.pane_a, w.pane_b], w.outputs, **SEND_TRIGGER)]
    w.stop.click(h.stopped, [w.state, w.pane_a, w.pane_b], w.outputs, cancels=runs)
    for button, (_, choice, _) in zip(w.vote_buttons, CHOICES):
        button.click(h.vote_for(choice), [w.state, w.reasons, w.comment, w.pane_a, w.pane_b],
                     [*w.outputs, w.edit_box])
    w.edit_save.click(h.save_edit, [w.state, w.edit_box], [w.status])
    w.new.click(h.new_battle, None, w.outputs)

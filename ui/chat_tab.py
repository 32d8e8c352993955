"""The Chat tab: a direct multi-turn chat with one chosen served model, through the OpenAI API of the server."""

from __future__ import annotations

import time

import gradio as gr

from core.arena_client import ArenaClientError
from ui.context import ENTER_HINT, SEND_TRIGGER, UiContext, plain_messages, ticking, waiting_words
from ui.sampling import sampling_body, sampling_controls


def build_chat_tab(ctx: UiContext) -> gr.Dropdown:
    """Lay out the Chat tab; returns the model dropdown (the page load fills its choices)."""
    model = gr.Dropdown(choices=["base"], value="base", label="Model", elem_id="chat-model")
    chat = gr.Chatbot(label="Chat", elem_id="chat-pane", height=380, buttons=["copy"],
                      placeholder="Ask anything; the model keeps the whole conversation.")
    status = gr.Markdown("", elem_id="chat-status")
    prompt = gr.Textbox(label="Your message", lines=1, max_lines=8, elem_id="chat-prompt")
    gr.Markdown(ENTER_HINT, elem_classes=["palate-hint"])
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", elem_id="chat-stop", interactive=False)
        clear = gr.Button("New chat", elem_id="chat-clear")
    system, max_tokens, temperature, seed = sampling_controls(ctx.config, "chat")

    async def run(name, text, history, sys, mt, temp, sd, request: gr.Request):
        text = (text or "").strip()
        history = plain_messages(history)
        if not text:
            yield history, "Type a message first.", gr.Textbox(), gr.Button(interactive=True), \
                gr.Button(interactive=False)
            return
        body = sampling_body(sys, mt, temp, sd)
        system_text = body.pop("system")
        messages = ([{"role": "system", "content": system_text}] if system_text else []) + \
            [{"role": m["role"], "content": m["content"]} for m in history] + [{"role": "user", "content": text}]
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        client, started, got = ctx.client(request), time.monotonic(), False
        yield history, "Waiting for the first words…", gr.Textbox(value=""), gr.Button(interactive=False), \
            gr.Button(interactive=True)
        try:
            async for delta in ticking(client.chat_deltas(name, messages, judge=ctx.judge(request), **body)):
                if delta:
                    history[-1] = {"role": "assistant", "content": history[-1]["content"] + delta}
                    got = True
                words = await waiting_words(client, time.monotonic() - started, got)
                yield history, words, gr.Textbox(), gr.Button(interactive=False), gr.Button(interactive=True)
        except ArenaClientError as exc:
            yield history[:-2], f"**Could not answer:** {exc.message}", gr.Textbox(value=text), \
                gr.Button(interactive=True), gr.Button(interactive=False)
            return
        except Exception as exc:  # noqa: BLE001
            yield history[:-2], f"**The server could not be reached** ({type(exc).__name__}).", \
                gr.Textbox(value=text), gr.Button(interactive=True), gr.Button(interactive=False)
            return
        yield history, f"{name} answered in {time.monotonic() - started:.0f} s.", gr.Textbox(), \
            gr.Button(interactive=True), gr.Button(interactive=False)

    outputs = [chat, status, prompt, send, stop]
    inputs = [model, prompt, chat, system, max_tokens, temperature, seed]
    runs = [send.click(run, inputs, outputs, **SEND_TRIGGER), prompt.submit(run, inputs, outputs, **SEND_TRIGGER)]
    stop.click(lambda: ("Stopped: the answer was aborted.", gr.Button(interactive=True), gr.Button(interactive=False)),
               None, [status, send, stop], cancels=runs)
    clear.click(lambda: ([], ""), None, [chat, status])
    return model

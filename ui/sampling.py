"""Sampling and system controls for the named modes (Compare, Chat); Battle has none: blind mode uses the server's
defaults, as Chatbot Arena does."""

from __future__ import annotations

import gradio as gr

from core.arena_config import ArenaConfig


def sampling_controls(config: ArenaConfig, prefix: str) -> tuple:
    """(system, max_tokens, temperature, seed) inside a closed accordion; seed 0 means a random seed."""
    with gr.Accordion("System message and sampling (the same for every model)", open=False):
        system = gr.Textbox(label="System message", lines=1, max_lines=4, elem_id=f"{prefix}-system")
        max_tokens = gr.Slider(16, 1024, value=config.default_max_tokens, step=16, label="Longest answer (tokens)")
        temperature = gr.Slider(0.0, 1.5, value=config.temperature, step=0.05, label="Temperature")
        seed = gr.Number(value=0, precision=0, label="Seed (0: random)", minimum=0)
    return system, max_tokens, temperature, seed


def sampling_body(system: str, max_tokens: float, temperature: float, seed: float) -> dict:
    return {"system": (system or "").strip() or None, "max_tokens": int(max_tokens) if max_tokens else None,
            "temperature": temperature, "seed": int(seed) if seed else None}

"""Subcommand of the ui package: `palate arena` (the Gradio arena on its own)."""

from __future__ import annotations

import argparse
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds this package's subcommands to `palate`."""
    arena = subparsers.add_parser(
        "arena", help="Run the blind arena UI against a running Palate server.",
        description="Run the Gradio arena on its own; it talks to the server over HTTP only.")
    arena.add_argument("--server", default="http://127.0.0.1:8000", help="base URL of a running `palate serve`")
    arena.add_argument("--host", default="127.0.0.1", help="address the UI binds")
    arena.add_argument("--port", type=int, default=7860, help="port the UI binds")
    arena.add_argument("--arena-config", default=None, help="arena YAML (default configs/arena.yaml)")
    arena.set_defaults(handler=_arena)


def _arena(args: argparse.Namespace) -> int:
    from core.arena_config import load_arena_config
    from ui.app import launch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_arena_config(args.arena_config)
    print(f"palate arena: http://{args.host}:{args.port} -> server {args.server}", flush=True)
    launch(args.server, host=args.host, port=args.port, arena_config=config)
    return 0

"""`palate serve`: the OpenAI-compatible server with base + adapters (and the arena at /arena).
`palate demo`: the same with `--watch`, while `palate train all --if-missing` trains sft and dpo in the background."""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="Serve base + adapters behind an OpenAI-compatible API.")
    serve.add_argument("--config", default=None, help="Server config YAML (default: configs/server.yaml).")
    serve.add_argument("--host", default=None, help="Override server.host.")
    serve.add_argument("--port", type=int, default=None, help="Override server.port.")
    serve.add_argument("--engine", choices=["vllm", "hf", "remote"], default=None, help="Override server.engine.")
    serve.add_argument("--remote-url", default=None, help="Override server.remote_url (engine 'remote').")
    serve.add_argument("--adapter-root", default=None, help="Override server.adapter_root.")
    serve.add_argument("--database-url", default=None, help="Override server.database_url (vote store).")
    serve.add_argument("--watch", action="store_true", help="Hot-load new adapter versions from the registry.")
    serve.add_argument("--no-arena", action="store_true", help="Do not mount the Gradio arena at /arena.")
    serve.set_defaults(handler=_serve)
    register_demo(subparsers)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from core.config import load_config
    from server.app import build_engine, create_app

    overrides = {
        "server.host": args.host, "server.port": args.port, "server.engine": args.engine,
        "server.remote_url": args.remote_url, "server.adapter_root": args.adapter_root,
        "server.database_url": args.database_url,
        "server.watch_adapters": True if args.watch else None,
        "server.mount_arena": False if args.no_arena else None,
    }
    config = load_config(args.config, {k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = config.model.resolved_dir()
    if not (model_dir / "config.json").is_file():
        print(f"palate serve: no base model at {model_dir}; run `palate model pull` first.", file=sys.stderr)
        return 2
    logging.getLogger("palate").info("resolved config: %s", config.model_dump_json())
    app = create_app(config, build_engine(config))
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown: the lifespan's finally stops the engine process.
    uvicorn.run(app, host=config.server.host, port=config.server.port, log_level="info", timeout_graceful_shutdown=10)
    return 0


def register_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="What `make demo` runs: serve base now, train sft and dpo meanwhile.")
    demo.add_argument("--config", default=None, help="Server config YAML (default: configs/server.yaml).")
    demo.add_argument("--host", default=None, help="Override server.host.")
    demo.add_argument("--port", type=int, default=None, help="Override server.port.")
    demo.add_argument("--adapter-root", default=None, help="Override server.adapter_root (also where training goes).")
    demo.add_argument("--database-url", default=None, help="Override server.database_url (vote store).")
    demo.add_argument("--profile", default="quick", choices=["quick", "full"], help="Training profile.")
    demo.add_argument("--train-log", default="runs/demo-train.log", help="Where the background training writes.")
    demo.add_argument("train_flags", nargs="*", metavar="-- FLAG", help="After `--`: flags for both training jobs.")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    """Start `palate train all --if-missing` in the background, then serve with --watch in the foreground: base
    answers as soon as the engine is up; sft and dpo are hot-loaded when training registers them. Ending the server
    (Ctrl-C) stops the training with a checkpoint; running it again resumes."""
    from core.config import PROJECT_ROOT, load_config
    from server.demo import background_training

    config = load_config(args.config, {k: v for k, v in {"server.adapter_root": args.adapter_root}.items() if v})
    if not (config.model.resolved_dir() / "config.json").is_file():
        print(f"palate demo: no base model at {config.model.resolved_dir()}; run `palate model pull` first.",
              file=sys.stderr)
        return 2
    root = config.server.registry_root()
    log_path = PROJECT_ROOT / args.train_log  # an absolute path stays itself
    with background_training(root, args.profile, args.train_flags, log_path) as child:
        print(f"palate demo: training sft and dpo in the background (pid {child.pid}, log {log_path}); the arena "
              "shows its progress and adapters join when registered.", flush=True)
        serve = argparse.Namespace(config=args.config, host=args.host, port=args.port, engine=None, remote_url=None,
                                   adapter_root=str(root), database_url=args.database_url, watch=True,
                                   no_arena=False)
        return _serve(serve)

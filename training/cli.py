"""Subcommands of the training package: `palate model pull` (and, later, `palate train`, `palate adapters`)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="Provision the base model.")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pull = model_sub.add_parser("pull", help="Build the base model directory from the embedded GGUF (idempotent).")
    pull.add_argument("--config", default=None, help="Model config YAML (default: configs/model.yaml).")
    pull.add_argument("--force", action="store_true", help="Rebuild even if an intact copy exists.")
    pull.set_defaults(handler=_model_pull)


def _model_pull(args: argparse.Namespace) -> int:
    from core.config import load_model_config
    from training.provision import ProvisionError, provision

    cfg = load_model_config(args.config)
    try:
        result = provision(cfg, force=args.force)
    except ProvisionError as exc:
        print(f"palate model pull: {exc}", file=sys.stderr)
        return 2
    print(result.message)
    print(f"weights sha256: {result.weights_sha256}")
    return 0

"""`palate` - one command, one subcommand per job.

Each package registers its own subcommands (`register(subparsers)` in `<package>/cli.py`) and imports its heavy
dependencies only inside the handler, so `palate --help` is instant and lists every subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.config import ConfigError

# The packages whose `cli.register` adds subcommands, in the order `palate --help` lists them.
COMMAND_MODULES = ["training.cli", "server.cli", "ui.cli", "eval.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palate",
        description="Teach a language model taste (SFT, then DPO) and show whether it learned it.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"palate: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("palate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Subcommands of the eval package."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds this package's subcommands to `palate`."""

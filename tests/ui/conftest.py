"""UI test fixtures: the real server for the live browser test."""

from tests.arena.live import arena_live_server  # noqa: F401

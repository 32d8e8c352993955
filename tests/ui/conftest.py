"""UI test fixtures: the real server for the live browser test."""


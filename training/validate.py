"""Validate a user's JSONL before any training: line-numbered errors, a kept/dropped summary, never a silent drop.

Accepted row shapes (TRL's standard and conversational formats):

    sft  conversational   {"messages": [{"role": ..., "content": ...}, ...]}         (at least one assistant turn)
    sft  standard         {"prompt": "...", "completion": "..."}
    sft  conversational   {"prompt": [messages], "completion": [assistant messages]}
    dpo  standard         {"prompt": "...", "chosen": "...", "rejected": "..."}
    dpo  conversational   {"prompt": [messages], "chosen": [assistant msgs], "rejected": [assistant msgs]}

Other keys (for example `listing`, `kind`) are allowed and dropped from `report.rows`, which is what a trainer gets.
All rows of a file must share one format. `validate_file` never raises for bad rows: it reports them;
`report.raise_for_errors()` raises `DataValidationError` (exit code 2 on the CLI) unless dropping was allowed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DataKind = Literal["sft", "dpo"]
ROLES = {"system", "user", "assistant", "tool"}
MAX_ERRORS_SHOWN = 20


class DataValidationError(ValueError):
    """A data file is unusable for training; the message is the line-numbered report."""


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based line number in the file
    reason: str  # short machine-readable reason, e.g. "invalid_json", "missing_field"
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message} [{self.reason}]"


@dataclass
class ValidationReport:
    """What validation found. `rows` are the kept rows, reduced to the fields TRL needs."""

    path: Path
    kind: DataKind
    format: str | None = None  # "conversational" | "standard" (of the kept rows)
    rows: list[dict] = field(default_factory=list)
    listings: list[dict | None] = field(default_factory=list)  # each kept row's `listing` facts, when it has them
    kinds: list[str | None] = field(default_factory=list)  # each kept row's near-miss `kind`, when it has one
    errors: list[LineError] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def kept(self) -> int:
        return len(self.rows)

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped, counted by reason."""
        return dict(Counter(error.reason for error in self.errors))

    @property
    def ok(self) -> bool:
        return not self.errors and self.kept > 0

    def summary(self) -> str:
        dropped = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.dropped.items())) or "none"
        head = (f"{self.path}: {self.kind} data, {self.format or 'unknown'} format - kept {self.kept} rows, "
                f"dropped {len(self.errors)} ({dropped})")
        lines = [head] + [f"  {error}" for error in self.errors[:MAX_ERRORS_SHOWN]]
        if len(self.errors) > MAX_ERRORS_SHOWN:
            lines.append(f"  ... and {len(self.errors) - MAX_ERRORS_SHOWN} more")
        if self.kept == 0:
            lines.append("  no usable rows")
        return "\n".join(lines)

    def raise_for_errors(self, allow_dropped: bool = False) -> None:
        """Raise DataValidationError if any row is invalid (or, with allow_dropped, if nothing is left)."""
        if self.kept == 0 or (self.errors and not allow_dropped):
            hint = "" if allow_dropped or self.kept == 0 else (
                "\nFix these lines, or pass --allow_invalid_rows true to train on the valid rows only.")
            raise DataValidationError(self.summary() + hint)


class _RowError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _messages(value: object, key: str, roles: set[str] | None = None) -> list[dict]:
    if not isinstance(value, list):
        raise _RowError("wrong_type", f"'{key}' must be a list of messages, got {type(value).__name__}")
    if not value:
        raise _RowError("empty_field", f"'{key}' is an empty list")
    cleaned = []
    for i, message in enumerate(value):
        where = f"'{key}[{i}]'"
        if not isinstance(message, dict):
            raise _RowError("wrong_type", f"{where} must be an object with role and content")
        for part in ("role", "content"):
            if part not in message:
                raise _RowError("missing_field", f"{where} has no '{part}'")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise _RowError("wrong_type", f"{where}.role must be one of {sorted(ROLES)}, got {role!r}")
        if roles is not None and role not in roles:
            raise _RowError("wrong_type", f"{where}.role must be {' or '.join(sorted(roles))}, got {role!r}")
        if not isinstance(content, str):
            raise _RowError("wrong_type", f"{where}.content must be a string, got {type(content).__name__}")
        if not content.strip():
            raise _RowError("empty_field", f"{where}.content is empty")
        cleaned.append({"role": role, "content": content})
    return cleaned


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _RowError("wrong_type", f"'{key}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _RowError("empty_field", f"'{key}' is empty")
    return value


def _field(row: dict, key: str) -> object:
    if key not in row or row[key] is None:
        raise _RowError("missing_field", f"missing field '{key}'")
    return row[key]


def _check_row(row: dict, kind: DataKind) -> tuple[str, dict]:
    """(format, cleaned row) or _RowError."""
    if kind == "sft" and "messages" in row:
        messages = _messages(row["messages"], "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise _RowError("missing_field", "'messages' has no assistant turn to learn from")
        return "conversational", {"messages": messages}
    answer_keys = ["completion"] if kind == "sft" else ["chosen", "rejected"]
    prompt = _field(row, "prompt")
    values = {key: _field(row, key) for key in answer_keys}
    if isinstance(prompt, list):
        cleaned = {"prompt": _messages(prompt, "prompt")}
        for key, value in values.items():
            cleaned[key] = _messages(value, key, roles={"assistant"})
        fmt = "conversational"
    else:
        cleaned = {"prompt": _text(prompt, "prompt")}
        for key, value in values.items():
            if isinstance(value, list):
                raise _RowError("wrong_type", f"'{key}' is a message list but 'prompt' is a string: use one format")
            cleaned[key] = _text(value, key)
        fmt = "standard"
    if kind == "dpo" and cleaned["chosen"] == cleaned["rejected"]:
        raise _RowError("chosen_equals_rejected", "'chosen' and 'rejected' are identical: the pair teaches nothing")
    return fmt, cleaned


def validate_file(path: Path | str, kind: DataKind) -> ValidationReport:
    """Check every line of a JSONL file for `kind` ("sft" or "dpo"). Raises DataValidationError only when the file
    cannot be read at all; bad rows are reported, not raised."""
    if kind not in ("sft", "dpo"):
        raise ValueError(f"kind must be 'sft' or 'dpo', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: data file not found")
    report = ValidationReport(path=path, kind=kind)
    first_format_line = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.errors.append(LineError(number, "invalid_utf8", f"not UTF-8 text ({exc.reason})"))
                continue
            if not text.strip():
                report.blank_lines += 1
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                report.errors.append(LineError(number, "invalid_json", f"invalid JSON: {exc.msg} (column {exc.colno})"))
                continue
            if not isinstance(row, dict):
                report.errors.append(LineError(number, "wrong_type", f"a row must be a JSON object, got {type(row).__name__}"))
                continue
            try:
                fmt, cleaned = _check_row(row, kind)
            except _RowError as exc:
                report.errors.append(LineError(number, exc.reason, exc.message))
                continue
            if report.format is None:
                report.format, first_format_line = fmt, number
            elif fmt != report.format:
                report.errors.append(LineError(
                    number, "format_mismatch",
                    f"{fmt} row in a file whose line {first_format_line} set the {report.format} format"))
                continue
            report.rows.append(cleaned)
            report.listings.append(row["listing"] if isinstance(row.get("listing"), dict) else None)
            report.kinds.append(row["kind"] if isinstance(row.get("kind"), str) else None)
    return report

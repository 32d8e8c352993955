"""What a job trains on: the base model's identity and the validated, TRL-ready datasets.

`base_model_info(dir)` reads the provisioning manifest (or hashes the weights of a user model directory).
`prepare_data(kind, path, ...)` validates a JSONL file (line-numbered errors, `DataValidationError` on failure),
records its sha256 and row counts, and returns rows with only the fields TRL needs. For SFT, conversations that end
in an assistant turn become prompt/completion pairs, so the loss covers the answer and not the prompt.
`length_bucketed(rows, ...)` orders rows so that each batch holds rows of similar length (`length_buckets`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from training.data import sha256_path
from training.validate import DataKind, ValidationReport, validate_file

MANIFEST = "palate_model.json"


def base_model_info(model_dir: Path) -> dict:
    """{"id", "weights_sha256", "path"} for a model directory (manifest first, else a hash of the weight files)."""
    model_dir = Path(model_dir)
    manifest = model_dir / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return {"id": data["id"], "weights_sha256": data["weights_sha256"], "path": str(model_dir)}
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{model_dir}: no model weights (*.safetensors); run `palate model pull` first.")
    digest = hashlib.sha256(b"".join(sha256_path(p).encode() for p in weights)).hexdigest()
    return {"id": model_dir.name, "weights_sha256": digest, "path": str(model_dir)}


@dataclass
class PreparedData:
    """A validated data file, ready for a TRL trainer."""

    path: Path
    sha256: str
    report: ValidationReport
    rows: list[dict] = field(default_factory=list)  # what the trainer gets (possibly capped)
    listings: list[dict | None] = field(default_factory=list)  # each row's `listing` facts (None: the row had none)
    kinds: list[str | None] = field(default_factory=list)  # each row's near-miss `kind` (None: the row had none)

    def record(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "format": self.report.format,
                "rows_in_file": self.report.kept + len(self.report.errors), "rows_kept": self.report.kept,
                "rows_dropped": self.report.dropped, "rows_used": len(self.rows)}

    def reorder(self, order: list[int]) -> None:
        """Put the rows (and their listings and kinds) in the order of the row indices `order`."""
        self.rows = [self.rows[i] for i in order]
        self.listings = [self.listings[i] for i in order]
        self.kinds = [self.kinds[i] for i in order]


def to_prompt_completion(rows: list[dict]) -> list[dict]:
    """SFT conversations -> prompt/completion (last assistant turn is the completion), when every row allows it."""
    if not rows or "messages" not in rows[0]:
        return rows
    if not all(row["messages"][-1]["role"] == "assistant" and len(row["messages"]) > 1 for row in rows):
        return rows
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def prepare_data(kind: DataKind, path: Path | str, allow_invalid_rows: bool = False,
                 max_rows: int | None = None, log=print) -> PreparedData:
    """Validate `path` for `kind` and return the rows to train on; raises DataValidationError when unusable."""
    path = Path(path)
    report = validate_file(path, kind)
    report.raise_for_errors(allow_dropped=allow_invalid_rows)
    if report.errors:
        log(report.summary())
    rows = report.rows[:max_rows] if max_rows else list(report.rows)
    if kind == "sft":
        rows = to_prompt_completion(rows)
    return PreparedData(path=path, sha256=sha256_path(path), report=report, rows=rows,
                        listings=report.listings[:len(rows)], kinds=report.kinds[:len(rows)])


def _text_length(value) -> int:
    """Characters of a row field: a string, or the contents of a list of chat messages."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(m.get("content", "")) if isinstance(m, dict) else _text_length(m) for m in value)
    return len(json.dumps(value, default=str))


def row_length(row: dict) -> int:
    """A row's length as the trainer pads it: the prompt plus its longest answer (characters, a proxy for tokens)."""
    answers = [row[key] for key in ("completion", "chosen", "rejected", "messages", "text") if key in row]
    return _text_length(row.get("prompt", "")) + max((_text_length(a) for a in answers), default=0)


def length_bucketed(rows: list, batch_size: int, batches_per_bucket: int, seed: int, length=row_length) -> list:
    """Rows shuffled with `seed`, then each run of `batches_per_bucket` batches sorted by length and cut into
    batches, whose order inside the run is shuffled again. Every row stays, each once; a prefix of the result is still
    a random sample of the rows (the sort never reaches past one run), and a batch pads to a similar length instead of
    to the longest of random rows. `length(row)` measures a row (default: `row_length`)."""
    rng = random.Random(f"length-buckets:{seed}")
    order = list(rows)
    rng.shuffle(order)
    span = batch_size * batches_per_bucket
    out: list = []
    for start in range(0, len(order), span):
        run = sorted(order[start:start + span], key=length)
        batches = [run[i:i + batch_size] for i in range(0, len(run), batch_size)]
        rng.shuffle(batches)
        out.extend(row for batch in batches for row in batch)
    return out

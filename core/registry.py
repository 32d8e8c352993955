"""The adapter registry: immutable, versioned LoRA adapters on disk, plus movable aliases.

Layout under the registry root (default `adapters/`):

    adapters/<name>/<version>/            PEFT files (adapter_config.json, adapter_model.safetensors) + palate.json
    adapters/aliases.json                 {"sft": "sft@1", "dpo": "dpo@2"} - rewritten atomically (temp + rename)
    adapters/promotions.jsonl             one line per alias move: from, to, the evidence or `forced` (append-only)
    adapters/evaluations.jsonl            one line per evaluation of a version, e.g. its agreement with votes

Versions are positive integers and immutable: writing a version that exists is an error. A new version is staged in
a temporary directory and renamed into place, so readers never see a half-written adapter.

Adapter and alias names follow one pattern, checked here so every way in (admin API, CLI, watch, training) obeys
it: 1 to 64 characters, letters, digits, `-`, `_` and `.`, starting with a letter or digit, never `..`, and never
`base` (the base model's name). Names become directory names and must not escape the registry root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ALIASES_FILE = "aliases.json"
META_FILE = "palate.json"
# Added in registry format 2: a registry without it (format 1) simply has no promotion records yet.
PROMOTIONS_FILE = "promotions.jsonl"
# Added in registry format 3: a registry without it (format 1 or 2) simply has no evaluation records yet.
EVALUATIONS_FILE = "evaluations.jsonl"
# The one name pattern for adapters and aliases (see the module docstring); `..` is refused separately.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = ("1-64 letters, digits, '-', '_' or '.', starting with a letter or digit, without '..' "
             "(e.g. dpo, sft-v2, listing_1.5)")
RESERVED_NAMES = {"base"}
AdapterKind = Literal["sft", "dpo", "external"]
log = logging.getLogger("palate.registry")
_WARNED: set[tuple[str, tuple[str, ...]]] = set()


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why and what to do instead."""


class VersionExistsError(RegistryError):
    """The version asked for is already taken (possibly by a concurrent writer a moment ago): take the next one."""


def valid_name(name: object) -> bool:
    """Whether `name` may name an adapter or an alias (the pattern in the module docstring; 'base' excluded)."""
    return (isinstance(name, str) and bool(NAME_RE.match(name)) and ".." not in name
            and name not in RESERVED_NAMES)


def check_name(name: object, what: str = "adapter name") -> str:
    """Return `name` if it is a valid adapter/alias name, else raise RegistryError saying what the rule is."""
    if not valid_name(name):
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        reserved = " ('base' is the base model's name)" if name in RESERVED_NAMES else ""
        raise RegistryError(f"{shown} cannot be an {what}{reserved}: use {NAME_RULE}, and not 'base'.")
    return name


def adapter_content_hash(directory: Path) -> str:
    """sha256 over the adapter's weight and config files (name + bytes), independent of palate.json."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and path.name != META_FILE and (path.suffix in {".safetensors", ".bin"} or path.name == "adapter_config.json"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'dpo@2' -> ('dpo', 2); 'dpo' -> ('dpo', None). Raises RegistryError on malformed refs."""
    name, _, version = ref.partition("@")
    if not NAME_RE.match(name) or ".." in name:
        raise RegistryError(f"'{ref}' is not a valid adapter reference: use name or name@version, e.g. dpo@2.")
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise RegistryError(f"'{ref}': the version must be a positive integer, e.g. {name}@1.")
    return name, int(version)


@dataclass(frozen=True)
class AdapterVersion:
    """One immutable adapter version on disk."""

    name: str
    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "external")

    @property
    def parent(self) -> str | None:
        return self.meta.get("parent")

    def adapter_config(self) -> dict[str, Any]:
        return json.loads((self.path / "adapter_config.json").read_text())


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class AdapterRegistry:
    """Read and write the registry rooted at `root`."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # ---- reading -------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_name(p.name))

    def versions(self, name: str) -> list[int]:
        directory = self.root / name
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / META_FILE).is_file())

    def get(self, name: str, version: int) -> AdapterVersion:
        path = self.root / name / str(version)
        if not (path / META_FILE).is_file():
            raise RegistryError(f"{name}@{version} is not in the registry at {self.root}; `palate adapters list` shows what is.")
        return AdapterVersion(name, version, path, json.loads((path / META_FILE).read_text()))

    def all_versions(self) -> list[AdapterVersion]:
        return [self.get(name, v) for name in self.names() for v in self.versions(name)]

    def aliases(self) -> dict[str, str]:
        """Alias -> name@version. Entries with a name outside the pattern (written before names were checked) are
        left out with a warning naming them, so they can never route a request or reach /health."""
        path = self.root / ALIASES_FILE
        stored = json.loads(path.read_text()) if path.is_file() else {}
        bad = sorted(repr(alias) for alias in stored if not valid_name(alias))
        if bad and (str(path), tuple(bad)) not in _WARNED:  # once, not at every watch poll
            _WARNED.add((str(path), tuple(bad)))
            log.warning("%s: ignoring alias(es) %s: not valid names (%s); rewrite them with a valid name",
                        path, ", ".join(bad), NAME_RULE)
        return {alias: target for alias, target in stored.items() if valid_name(alias)}

    def resolve(self, ref: str) -> AdapterVersion:
        """Resolve 'name@version', an alias, or a bare name (its alias if one exists, else its latest version)."""
        alias_target = self.aliases().get(ref)
        if alias_target:
            ref = alias_target
        name, version = parse_ref(ref)
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise RegistryError(f"No adapter named '{name}' in {self.root}. Train one (`palate train sft`) or add one (`palate adapters add`).")
            version = versions[-1]
        return self.get(name, version)

    def next_version(self, name: str) -> int:
        """The version a new `name` adapter gets; refuses an invalid name (so training fails before it trains)."""
        check_name(name)
        versions = self.versions(name)
        return (versions[-1] + 1) if versions else 1

    def verify(self, adapter: AdapterVersion) -> str | None:
        """None when the files match the content hash recorded in palate.json, else what is wrong."""
        expected = adapter.meta.get("content_sha256")
        if not (adapter.path / "adapter_config.json").is_file():
            return "adapter_config.json is missing"
        if not expected:
            return "palate.json has no content_sha256"
        actual = adapter_content_hash(adapter.path)
        return None if actual == expected else f"content hash mismatch (palate.json says {expected[:12]}…, files hash to {actual[:12]}…)"

    # ---- writing -------------------------------------------------------------------------------------------------
    def add(self, name: str, source_dir: Path, meta: dict[str, Any], version: int | None = None,
            move_alias: bool = True) -> AdapterVersion:
        """Copy a saved PEFT adapter from `source_dir` in as a new immutable version and (by default) point the
        alias `name` at it. `meta` is recorded in palate.json with name, version, content hash and created time."""
        check_name(name)
        source_dir = Path(source_dir)
        if not (source_dir / "adapter_config.json").is_file():
            raise RegistryError(f"{source_dir} is not a PEFT adapter directory (no adapter_config.json).")
        version = version or self.next_version(name)
        final = self.root / name / str(version)
        if final.exists():
            raise VersionExistsError(f"{name}@{version} already exists and versions are immutable; write {name}@{self.next_version(name)} instead.")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=final.parent))
        try:
            for item in source_dir.iterdir():
                if item.is_file() and item.name != META_FILE:
                    shutil.copy2(item, staging / item.name)
                elif item.is_dir():  # e.g. logs/ (tracker files); not part of the content hash
                    shutil.copytree(item, staging / item.name)
            record = dict(meta)
            record.update(
                name=name,
                version=version,
                content_sha256=adapter_content_hash(staging),
                created=record.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            (staging / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
            staging.chmod(0o755)
            try:
                # rename fails if the target appeared meanwhile: immutability holds even under a race.
                os.rename(staging, final)
            except OSError as exc:
                raise VersionExistsError(f"{name}@{version} already exists and versions are immutable.") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if move_alias:
            self.set_alias(name, f"{name}@{version}")
        return self.get(name, version)

    def set_alias(self, alias: str, target: str) -> None:
        """Point `alias` (a valid name, see the module docstring) at an existing `name@version`, atomically."""
        check_name(alias, "alias")
        name, version = parse_ref(target)
        if version is None:
            raise RegistryError(f"An alias must point at an exact version (name@version), not '{target}'.")
        self.get(name, version)  # must exist
        aliases = self.aliases()
        aliases[alias] = target
        _atomic_write_json(self.root / ALIASES_FILE, aliases)

    # ---- append-only records (promotions, evaluations) -----------------------------------------------------------
    def _records(self, filename: str) -> list[dict[str, Any]]:
        """Every line of an append-only record file, oldest first (empty when the file does not exist yet)."""
        path = self.root / filename
        if not path.is_file():
            return []
        records = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a crash: skip it, keep the rest
                log.warning("%s:%d: unreadable record skipped", path, line_no)
        return records

    def _append_record(self, filename: str, record: dict[str, Any]) -> None:
        """Append one JSON line and fsync it before returning."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / filename, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def promotions(self) -> list[dict[str, Any]]:
        """Every recorded alias move, oldest first (empty for a registry written before promotions existed)."""
        return self._records(PROMOTIONS_FILE)

    def promotion_of(self, ref: str, alias: str | None = None) -> dict[str, Any] | None:
        """The latest record that moved an alias (`alias`, or any) to `ref`, or None."""
        for record in reversed(self.promotions()):
            if record.get("to") == ref and (alias is None or record.get("alias") == alias):
                return record
        return None

    def promote(self, alias: str, target: str, evidence: dict[str, Any], forced: bool = False) -> dict[str, Any]:
        """Record why `alias` moves to `target` (the evidence, or that it was forced), then move it atomically.
        The record is written (and fsynced) first: an alias never points somewhere without a reason on file."""
        check_name(alias, "alias")
        record = {"alias": alias, "from": self.aliases().get(alias), "to": target, "forced": bool(forced),
                  "evidence": evidence, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        name, version = parse_ref(target)
        if version is None:
            raise RegistryError(f"An alias must point at an exact version (name@version), not '{target}'.")
        self.get(name, version)
        self._append_record(PROMOTIONS_FILE, record)
        self.set_alias(alias, target)
        return record

    def record_evaluation(self, ref: str, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        """Append an evaluation of version `ref` (e.g. kind 'agreement': its rate against one vote source)."""
        name, version = parse_ref(ref)
        if version is None:
            raise RegistryError(f"An evaluation is of an exact version (name@version), not '{ref}'.")
        self.get(name, version)
        record = {"ref": ref, "kind": kind, **result, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._append_record(EVALUATIONS_FILE, record)
        return record

    def evaluations(self, ref: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Recorded evaluations, oldest first, of `ref` and of `kind` when given."""
        return [r for r in self._records(EVALUATIONS_FILE)
                if (ref is None or r.get("ref") == ref) and (kind is None or r.get("kind") == kind)]

    def latest_agreements(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The latest agreement record of each (version, vote source): one read of evaluations.jsonl."""
        return {(r["ref"], r.get("source", "people")): r for r in self.evaluations(kind="agreement")}

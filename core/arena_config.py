"""Arena settings (`configs/arena.yaml`): who fights, how answers are sampled, how the leaderboard is computed.

The file is found at `$PALATE_ARENA_CONFIG` when set, else `configs/arena.yaml`; a missing file means the defaults.
Both the server (battles, leaderboard) and the UI (example prompts) read it.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import Literal

from pydantic import Field, model_validator

from core.config import CONFIG_DIR, _Strict, read_yaml, validate

UI_VERSION = "arena-ui/2"
# Why a judge preferred one answer (or disliked both); stored with the vote, shown as plain words in the UI.
REASON_TAGS = ("grounded", "invented_facts", "hype", "repetitive", "too_long", "too_short")


class ArenaConfig(_Strict):
    """The arena's knobs; every field is documented where declared."""

    contestants: list[str] = Field(
        default_factory=lambda: ["base", "sft", "dpo"],
        description="Served model names (aliases or name@version) battles draw from; unresolvable ones are skipped.",
    )
    max_prompt_chars: int = Field(4000, description="Longest prompt (plus system message) a battle accepts.")
    default_max_tokens: int = Field(192, description="max_tokens per side when the request gives none.")
    temperature: float = Field(0.7, description="Default sampling temperature, identical for both sides.")
    top_p: float = Field(0.95, description="Default nucleus sampling, identical for both sides.")
    pending_window_s: float = Field(
        900.0, description="Battles started this recently and not yet voted count towards their pair's load, so "
        "concurrent battles spread over pairs instead of piling onto the least-voted one.")
    matchmaking: Literal["least_played", "active"] = Field(
        "least_played", description="How the next battle's pair is picked: 'least_played' (the pair with the fewest "
        "battles) or 'active' (the pair whose vote settles most of the Bradley-Terry ranking, the top counting most, "
        "server/arena/active_matchmaking.py; every pair keeps `active_floor` of an equal share).")
    active_floor: float = Field(
        0.25, ge=0, le=1, description="With matchmaking 'active': every pair gets at least this fraction of an equal "
        "share of battles (1 / number of pairs); 0 lets the policy starve settled pairs.")
    min_votes: int = Field(10, description="Below this many votes a contestant is shown as provisional.")
    bootstrap_rounds: int = Field(200, ge=100, description="Bootstrap rounds for the 95% rating intervals (>= 100).")
    pseudo_ties: float = Field(0.5, ge=0, description="Virtual tie games per pair: keeps unbeaten ratings finite.")
    anchor: str | None = Field(None, description="Contestant pinned at 1000; None pins the mean rating at 1000.")
    export_access: Literal["admin", "open", "off"] = Field(
        "admin", description="Who may read GET /v1/arena/export and the UI's Export tab (every stored prompt and "
        "answer): 'admin' needs the admin token (server.admin_token / PALATE_ADMIN_TOKEN), 'open' lets anyone, "
        "'off' refuses everyone (use `palate votes export` on the server).")
    simulated_ui_versions: list[str] = Field(
        default_factory=lambda: ["palate-loop"],
        description="ui_version values (of the battle or the vote) that mark simulated judges, such as `palate "
        "loop`'s listing judge; their votes are rated apart from people's.")
    compare_max_models: int = Field(3, ge=2, le=4, description="Most models one Compare request may name.")
    identity_terms: dict[str, list[str]] = Field(
        default_factory=lambda: {"base": ["base model"]},
        description="Extra phrases that reveal a contestant, by served name (the adapter name, its name@version "
        "and its content-hash prefix are always checked). Answers containing one are flagged identity_leak.",
    )
    example_prompts: list[str] = Field(default_factory=list, description="Shown under the UI's prompt box.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data):  # noqa: ANN001 - a removed key must fail loudly, saying what replaced it
        if isinstance(data, dict) and "export_via_api" in data:
            raise ValueError("export_via_api was replaced by export_access: 'admin' (default: needs the admin "
                             "token), 'open' (anyone) or 'off'")
        return data


def arena_config_path() -> Path:
    return Path(os.environ.get("PALATE_ARENA_CONFIG") or CONFIG_DIR / "arena.yaml")


def load_arena_config(path: Path | str | None = None) -> ArenaConfig:
    """Load and validate the arena settings; errors name the file and key (ConfigError)."""
    path = Path(path) if path else arena_config_path()
    if not path.is_file() and path == CONFIG_DIR / "arena.yaml":
        return ArenaConfig()
    return validate(ArenaConfig, read_yaml(path), str(path))

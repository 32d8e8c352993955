"""`palate loop`: close the loop on a running server, end to end, through its public APIs only.

    1. simulated voters: for held-out listings, start arena battles (POST /v1/arena/battles, SSE), read both blind
       answers, judge each against the listing's facts (`eval.judge`), vote (A, B or tie) through the API - at
       least `votes` of them, more (up to `max_votes`) until `min_pairs` votes are usable as pairs (decisive, both
       answers complete: the export drops ties and truncated answers);
    2. `palate votes export` -> DPO pairs (TRL JSONL) and their sha256;
    3. `palate train dpo --data <export> --from <parent>` -> a new registry version `name@N`;
    4. hot-load it (POST /admin/adapters) and promote it (`eval.promotion`): the alias moves (POST /admin/aliases,
       no restart) only if the new version beats the alias's current target on held-out margins, judged
       generations through the server and degeneration - or when `force_promote` says so (recorded as forced);
    5. ask it through the OpenAI client, and read its lineage back from /v1/models.

Each step prints progress and the record of everything (vote tallies, export hash, new version, answer, lineage)
is written to `<out_dir>/loop.json`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datetime as dt

import httpx

from core.arena_client import ArenaClient
from core.registry import AdapterRegistry
from core.vote_export import drop_reason
from core.votes import BattleRecord, SideRecord, VoteRecord
from eval.generate import read_prompts
from eval.judge import judge_listing, prefer
from eval.promotion import PromotionPolicy

LOOP_UI_VERSION = "palate-loop"  # how the leaderboard tells these votes from people's (arena.simulated_ui_versions)


@dataclass
class LoopSettings:
    server: str
    admin_token: str
    votes: int = 60
    min_pairs: int = 4  # keep voting (past `votes`) until this many votes are usable as DPO pairs ...
    max_votes: int = 180  # ... but never past this many
    prompts: Path = Path("data/listings/sft_eval.jsonl")
    registry: Path = Path("adapters")
    database_url: str | None = None  # export from the store directly; None: through the server's export API
    name: str = "dpo"
    parent: str = "dpo"
    max_steps: int | None = None
    train_flags: list[str] = field(default_factory=list)
    out_dir: Path = Path("reports/loop")
    concurrency: int = 4
    max_tokens: int | None = None  # per side; None: the arena's default
    promote_pairs: int = PromotionPolicy.pairs  # held-out pairs for the promotion's margins check
    promote_prompts: int = PromotionPolicy.prompts  # held-out prompts for its generations check
    promote_handwritten: int | None = None  # hand-written prompts judged with them (None: all, 0: none)
    force_promote: bool = False  # move the alias even when a check fails (recorded as forced)
    model_dir: Path | None = None  # base model for the margins check (default: configs/model.yaml)
    progress: Any = print


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run a `palate` subcommand as the user would (a fresh process), failing loudly with its output."""
    done = subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"palate {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


async def _battle(client: ArenaClient, prompt: str, judge_id: str, max_tokens: int | None, seed: int) -> dict:
    """One blind battle to its end: its id, both answers and how each side finished."""
    texts: dict[str, list[str]] = {"A": [], "B": []}
    finish, battle_id = {}, None
    async for event in client.battle_events(prompt, judge=judge_id, seed=seed, max_tokens=max_tokens):
        if event["type"] == "battle":
            battle_id = event["battle_id"]
        elif event["type"] == "delta":
            texts[event["side"]].append(event["text"])
        elif event["type"] == "side_done":
            finish[event["side"]] = event["finish_reason"]
    return {"battle_id": battle_id, "A": "".join(texts["A"]), "B": "".join(texts["B"]), "finish": finish}


def as_battle(record: dict) -> BattleRecord:
    """A loop vote record as the store holds the battle: enough for the export's own drop rules."""
    contestants = (record.get("reveal") or {}).get("contestants") or {}
    flags = (record.get("reveal") or {}).get("flags") or []
    sides = {s: SideRecord(s, (contestants.get(s) or {}).get("model", s), response=record[s],
                           finish_reason=record["finish"].get(s),
                           flags=[f.split(":")[0] for f in flags if f.endswith(f":{s}")]) for s in ("A", "B")}
    now = dt.datetime.now(dt.timezone.utc)
    return BattleRecord(record["battle_id"], now, record["key"][0], None, "", "", {}, 0, sides,
                        vote=VoteRecord(record["choice"], now))


def usable(record: dict) -> bool:
    """Will the export keep this vote? `core.vote_export.drop_reason` decides (ties, truncated sides, ...)."""
    return drop_reason(as_battle(record)) is None


def usable_pairs(records: list[dict]) -> int:
    """Distinct (prompt, model pair) among usable votes: the export merges repeats into one row."""
    return len({r["key"] for r in records if usable(r)})


async def simulate_votes(settings: LoopSettings) -> dict:
    """Cast at least `settings.votes` arena votes chosen by the listing judge, going on (up to `max_votes`) until
    `min_pairs` of them are usable as DPO pairs. Returns tallies and per-vote records."""
    prompts = [p for p in read_prompts(settings.prompts) if p.listing]
    if not prompts:
        raise ValueError(f"{settings.prompts}: no prompts with listing facts to judge against")
    gate = asyncio.Semaphore(settings.concurrency)
    records: list[dict] = []
    client = ArenaClient(settings.server, ui_version=LOOP_UI_VERSION)

    async def one(i: int) -> None:
        prompt = prompts[i % len(prompts)]
        user = next(m["content"] for m in reversed(prompt.messages) if m["role"] == "user")
        voter = f"sim-voter-{i % 7}"
        async with gate:
            battle = await _battle(client, user, voter, settings.max_tokens, 1000 + i)
            va, vb = judge_listing(battle["A"], prompt.listing), judge_listing(battle["B"], prompt.listing)
            choice = prefer(va, vb)
            reveal = await client.vote(battle["battle_id"], choice, judge=voter)
        models = sorted(c.get("model", "?") for c in (reveal.get("contestants") or {}).values())
        records.append({"battle_id": battle["battle_id"], "choice": choice, "scores": [va.score, vb.score],
                        "A": battle["A"], "B": battle["B"], "finish": battle["finish"], "reveal": reveal,
                        "key": (user, *models)})
        if len(records) % 10 == 0:
            settings.progress(f"  votes cast: {len(records)} ({usable_pairs(records)} usable as pairs)")

    cast = 0
    while cast < settings.max_votes and (cast < settings.votes or usable_pairs(records) < settings.min_pairs):
        batch = settings.votes if cast == 0 else min(10, settings.max_votes - cast)
        await asyncio.gather(*(one(i) for i in range(cast, cast + batch)))
        cast += batch
    tally = {c: sum(r["choice"] == c for r in records) for c in ("A", "B", "tie")}
    return {"cast": len(records), "usable": usable_pairs(records), "tally": tally, "records": records}


async def _admin(client: httpx.AsyncClient, path: str, body: dict, token: str) -> dict:
    response = await client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        raise RuntimeError(f"POST {path} {body}: {response.status_code} {response.text[:500]}")
    return response.json()


def _promote(settings: LoopSettings, registry: Any, ref: str) -> dict:
    """The promotion gate on the new version, with generations through the running server."""
    from core.config import load_model_config
    from eval.promotion import PromotionRefused, promote

    policy = PromotionPolicy(pairs=settings.promote_pairs, prompts=settings.promote_prompts,
                             handwritten_prompts=settings.promote_handwritten,
                             prompts_data=str(settings.prompts), max_tokens=settings.max_tokens)
    model_dir = settings.model_dir or load_model_config().resolved_dir()
    try:
        result = promote(registry, ref, settings.name, force=settings.force_promote, policy=policy,
                         model_dir=model_dir, server=settings.server, progress=settings.progress)
    except PromotionRefused as exc:
        return {"moved": False, "forced": False, "checks": exc.result["checks"], "summary": str(exc)}
    forced = result["record"]["forced"]
    return {"moved": True, "forced": forced, "checks": result["checks"],
            "summary": f"'{settings.name}' -> {ref} ({'forced' if forced else 'on evidence'})"}


def _export_and_train(settings: LoopSettings) -> tuple[Path, dict, Any, Any]:
    """Steps 2 and 3: export the votes as DPO pairs, train a new version on them; (export, lint, version, registry)."""
    say = settings.progress
    export = settings.out_dir / "arena-pairs.jsonl"
    say(f"[2/5] palate votes export --out {export}")
    source = ["--database-url", settings.database_url] if settings.database_url else \
        ["--server", settings.server, "--admin-token", settings.admin_token]  # the export API needs the admin token
    _cli("votes", "export", "--out", str(export), *source)
    lint = json.loads(export.with_name(export.name + ".lint.json").read_text())
    say(f"      {lint['rows']} pairs, sha256 {lint['sha256'][:12]}")
    if lint["rows"] == 0:
        raise RuntimeError("the export has no pairs (every vote a tie?): nothing to train on")

    say(f"[3/5] palate train dpo --data {export} --from {settings.parent}")
    flags = ["--data", str(export), "--from", settings.parent, "--name", settings.name, "--registry",
             str(settings.registry), "--profile", "quick", *settings.train_flags]
    if settings.max_steps:
        flags += ["--max_steps", str(settings.max_steps)]
    _cli("train", "dpo", *flags)
    registry = AdapterRegistry(settings.registry)
    new = registry.get(settings.name, registry.versions(settings.name)[-1])
    if new.meta.get("dataset_sha256") != lint["sha256"]:
        raise RuntimeError(f"{new.ref} records dataset {new.meta.get('dataset_sha256')}, not the export {lint['sha256']}")
    say(f"      registered {new.ref} (parent {new.parent})")
    return export, lint, new, registry


async def run_loop(settings: LoopSettings) -> dict:
    """Run the five steps (module docstring) and return the record (also written to out_dir/loop.json)."""
    say = settings.progress
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say(f"[1/5] {settings.votes} simulated arena votes on {settings.server} (listing judge decides) ...")
    votes = await simulate_votes(settings)
    say(f"      {votes['cast']} votes, tally {votes['tally']}, {votes['usable']} usable as pairs")

    export, lint, new, registry = _export_and_train(settings)
    async with httpx.AsyncClient(base_url=settings.server, timeout=600) as client:
        say(f"[4/5] hot-load {new.ref}, then promote it to '{settings.name}' only on evidence (no restart)")
        await _admin(client, "/admin/adapters", {"ref": new.ref}, settings.admin_token)
        promotion = await asyncio.to_thread(_promote, settings, registry, new.ref)
        if promotion["moved"]:
            await _admin(client, "/admin/aliases", {"alias": settings.name, "target": new.ref}, settings.admin_token)
        say(f"      {promotion['summary']}")
        cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    say(f"[5/5] ask '{settings.name}' through the OpenAI client")
    from openai import AsyncOpenAI

    openai = AsyncOpenAI(base_url=settings.server.rstrip("/") + "/v1", api_key="palate")
    prompt = read_prompts(settings.prompts, limit=1)[0]
    answer = await openai.chat.completions.create(model=settings.name, messages=prompt.messages, max_tokens=80,
                                                  temperature=0.0)
    record = {
        "votes": {"cast": votes["cast"], "usable": votes["usable"], "tally": votes["tally"]},
        "export": {"path": str(export), "rows": lint["rows"], "sha256": lint["sha256"]},
        "new_version": {"ref": new.ref, "parent": new.parent, "dataset_sha256": new.meta.get("dataset_sha256")},
        "alias": {settings.name: cards.get(settings.name, {}).get("root")},
        "promotion": promotion,
        "card": cards.get(settings.name),
        "answer": {"model": answer.model, "text": answer.choices[0].message.content},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (settings.out_dir / "loop.json").write_text(json.dumps(record, indent=1, default=str))
    say(f"      {answer.model}: {record['answer']['text'][:120]!r}")
    say(f"done in {record['seconds']}s; record in {settings.out_dir / 'loop.json'}")
    return record

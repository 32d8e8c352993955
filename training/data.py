"""The demo dataset: listing descriptions, grounded (chosen) versus near-miss (rejected), as TRL JSONL.

`build_dataset(out_dir, seed)` writes five files, deterministic from `seed`:

    sft_train.jsonl  sft_eval.jsonl      {"messages": [user, assistant], "listing": facts, "family": ...}
    prefs_train.jsonl prefs_eval.jsonl   {"prompt": [user], "chosen": [assistant], "rejected": [assistant],
                                          "kind": near-miss kind, "listing": facts, "family": ...}
    prompts_heldout.jsonl                {"messages": [user], "listing": facts, "family": ...}

Each prompt is written in one phrasing family (training/prompts.py) and about a third of them state only some of
the listing's facts (`listing.unstated`), as people do. Train and eval are split by listing, so no listing (and no
prompt) appears in both. The training files use `TRAIN_FAMILIES` only; `HELDOUT_FAMILIES` appear only in
`prompts_heldout.jsonl` (eval listings) and in a share of `prefs_eval.jsonl`, so the evaluation also measures
wordings no adapter trained on. Near-miss kinds rotate per listing so every kind is equally represented in both
splits. Every chosen answer is checked with `grounding_problems` while building: a generator bug fails the build
instead of poisoning the data. The extra keys (`listing`, `kind`, `family`) are dropped by `training.validate`
before rows reach a TRL trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path

from training.describe import asked_in, write_grounded
from training.grounding import grounding_problems
from training.listings import Listing, generate_listings
from training.nearmiss import NEAR_MISS_KINDS, REPLAY_KINDS, write_near_miss
from training.prompts import FAMILIES, HELDOUT_FAMILIES, TRAIN_FAMILIES, partial_view, write_prompt

DEFAULT_OUT = Path("data/listings")
FILES = ("sft_train.jsonl", "sft_eval.jsonl", "prefs_train.jsonl", "prefs_eval.jsonl", "prompts_heldout.jsonl")
# How often each training family is drawn: free-form asks outweigh the fact sheets people rarely type.
TRAIN_WEIGHTS = {"fact_list": 1.0, "fact_sentence": 1.0, "facts_first": 1.0, "prose": 2.0, "notes": 2.0,
                 "rewrite": 1.5, "mls": 1.5}
PARTIAL_SHARE = 0.35  # share of prompts that state only some of the facts
# How often each near-miss kind is the rejected answer of a training pair. SFT alone already writes no hype, hedges
# or vague filler (hype rate 0 on held-out wordings), so DPO pairs spend most of their few steps on what the SFT
# adapter still gets wrong: facts left out, numbers in the wrong role or wrong, features that are not there
# (README, "What made the adapters loop"). The eval split keeps every kind equally often, so the margins still
# measure all eight.
TRAIN_KIND_WEIGHTS = {"hype": 1, "vague": 1, "over_hedged": 1, "invented_feature": 3, "wrong_number": 3,
                      "omits_facts": 3, "misplaced_number": 3, "drops_a_fact": 3}
# Bumped whenever the same seed would write other rows, so a dataset built by an earlier generator is rebuilt
# (2: answers state the facts in the order the prompt gave them and the area as the prompt wrote it; the
# misplaced_number and drops_a_fact near-misses; held-out prompts on a stream of their own; 3: the `mls` family,
# notes sometimes typed in lower case, training pairs weighted by TRAIN_KIND_WEIGHTS; 4: hype on the features
# themselves, rewrite requests asked and quoted more ways). Recorded with the seed in STAMP.
GENERATOR_VERSION = 4
STAMP = "dataset.json"


def sha256_path(path: Path | str) -> str:
    """sha256 of a file's exact bytes (what palate.json records as dataset_sha256)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def split_listings(listings: list[Listing], seed: int, eval_fraction: float) -> tuple[list[Listing], list[Listing]]:
    """Shuffle by seed and cut: (train, eval). Disjoint by listing id."""
    order = list(listings)
    random.Random(f"split:{seed}").shuffle(order)
    n_eval = max(1, round(len(order) * eval_fraction))
    return order[n_eval:], order[:n_eval]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _view(listing: Listing, family: str, rng: random.Random) -> Listing:
    """The facts a prompt of `family` states: sometimes a partial view; a rewrite states what its hype text says."""
    if family == "rewrite":  # the hype text never mentions fee, year or condition
        return listing.partial({k for k in ("area_sqft", "transit") if rng.random() < 0.8}, listing.features)
    return partial_view(listing, rng) if rng.random() < PARTIAL_SHARE else listing


def _ask(listing: Listing, family: str, rng: random.Random) -> tuple[Listing, str]:
    view = _view(listing, family, rng)
    return view, write_prompt(view, family, rng)


def sft_row(listing: Listing, family: str, rng: random.Random) -> dict:
    view, prompt = _ask(listing, family, rng)
    answer = write_grounded(view, rng, asked=asked_in(prompt, view))
    return {"messages": _user(prompt) + _assistant(answer), "listing": view.facts(), "family": family}


def preference_row(listing: Listing, kind: str, family: str, rng: random.Random) -> dict:
    """One pair: a prompt in `family`, a grounded chosen answer, a near-miss of `kind` as rejected."""
    view, prompt = _ask(listing, family, rng)
    asked = asked_in(prompt, view)
    wording_state = rng.getstate()
    chosen = write_grounded(view, rng, asked=asked)
    if kind in REPLAY_KINDS:
        replay = random.Random()
        replay.setstate(wording_state)
        rejected = write_near_miss(kind, view, replay, asked=asked)
    else:
        rejected = write_near_miss(kind, view, rng)
    return {"prompt": _user(prompt), "chosen": _assistant(chosen), "rejected": _assistant(rejected), "kind": kind,
            "listing": view.facts(), "family": family}


def heldout_prompt_row(listing: Listing, family: str, rng: random.Random) -> dict:
    view, prompt = _ask(listing, family, rng)
    return {"messages": _user(prompt), "listing": view.facts(), "family": family}


def build_rows(seed: int = 0, n_listings: int = 800, eval_fraction: float = 0.15,
               pairs_per_listing: int = 2, sft_per_listing: int = 2) -> dict[str, list[dict]]:
    """The five files as lists of rows (file name -> rows), without writing anything."""
    listings = generate_listings(seed=seed, n=n_listings)
    train, evaluation = split_listings(listings, seed, eval_fraction)
    rng = random.Random(f"text:{seed}")
    pick = random.Random(f"family:{seed}")
    # the held-out prompts draw from their own stream, so a change to how training rows are written leaves them as
    # they are and evaluations before and after it compare on the same prompts
    heldout_rng = random.Random(f"heldout:{seed}")
    weights = [TRAIN_WEIGHTS[f] for f in TRAIN_FAMILIES]
    kinds = {"train": _kind_rotation(TRAIN_KIND_WEIGHTS), "eval": list(NEAR_MISS_KINDS)}
    out: dict[str, list[dict]] = {name: [] for name in FILES}
    for split, group in (("train", train), ("eval", evaluation)):
        families = TRAIN_FAMILIES if split == "train" else FAMILIES
        for index, listing in enumerate(group):
            for _ in range(sft_per_listing if split == "train" else 1):
                family = pick.choices(TRAIN_FAMILIES, weights)[0]
                out[f"sft_{split}.jsonl"].append(sft_row(listing, family, rng))
            for j in range(pairs_per_listing):
                kind = kinds[split][(index * pairs_per_listing + j) % len(kinds[split])]
                family = pick.choices(TRAIN_FAMILIES, weights)[0] if split == "train" else families[
                    (index * pairs_per_listing + j) % len(families)]
                out[f"prefs_{split}.jsonl"].append(preference_row(listing, kind, family, rng))
            if split == "eval":
                family = HELDOUT_FAMILIES[index % len(HELDOUT_FAMILIES)]
                out["prompts_heldout.jsonl"].append(heldout_prompt_row(listing, family, heldout_rng))
    _check(out)
    return out


def _kind_rotation(weights: dict[str, int]) -> list[str]:
    """Near-miss kinds in a fixed rotation, each as often as its weight, in rounds: every kind once, then every
    kind with turns left once more, and so on."""
    assert set(weights) == set(NEAR_MISS_KINDS), "a weight for every near-miss kind"
    left = dict(weights)
    rotation: list[str] = []
    while any(left.values()):
        for kind in NEAR_MISS_KINDS:
            if left[kind]:
                rotation.append(kind)
                left[kind] -= 1
    return rotation


def _check(out: dict[str, list[dict]]) -> None:
    for name, rows in out.items():
        for row in rows:
            if name == "prompts_heldout.jsonl":
                continue
            answer = row["messages"][-1]["content"] if "messages" in row else row["chosen"][0]["content"]
            problems = grounding_problems(answer, row["listing"])
            if problems:
                raise AssertionError(f"{name}: generated answer for {row['listing']['id']} is not grounded: {problems}")
            if "rejected" in row and row["rejected"] == row["chosen"]:
                raise AssertionError(f"{name}: rejected equals chosen for {row['listing']['id']}")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSONL atomically (temp file + rename), with stable key order."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # unique: concurrent builds never clash
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)


def build_dataset(out_dir: Path | str = DEFAULT_OUT, seed: int = 0, n_listings: int = 800,
                  eval_fraction: float = 0.15, pairs_per_listing: int = 2) -> dict[str, Path]:
    """Generate the dataset and write it under `out_dir`; returns {"sft_train": path, ...} for the five files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, rows in build_rows(seed, n_listings, eval_fraction, pairs_per_listing).items():
        path = out_dir / name
        write_jsonl(path, rows)
        paths[name.removesuffix(".jsonl")] = path
    stamp = {"generator": GENERATOR_VERSION, "seed": seed, "n_listings": n_listings, "eval_fraction": eval_fraction,
             "pairs_per_listing": pairs_per_listing,
             "sha256": {name: sha256_path(out_dir / name) for name in FILES}}
    (out_dir / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return paths


def ensure_dataset(out_dir: Path | str = DEFAULT_OUT, seed: int = 0) -> dict[str, Path]:
    """The dataset under `out_dir`: reused when this generator built it from `seed` and no file changed since,
    otherwise (missing, older generator, other seed, edited) built again."""
    out_dir = Path(out_dir)
    try:
        stamp = json.loads((out_dir / STAMP).read_text())
        current = (stamp["generator"] == GENERATOR_VERSION and stamp["seed"] == seed
                   and all(sha256_path(out_dir / name) == stamp["sha256"][name] for name in FILES))
    except (OSError, ValueError, KeyError, TypeError):
        current = False
    if current:
        return {name.removesuffix(".jsonl"): out_dir / name for name in FILES}
    return build_dataset(out_dir, seed)

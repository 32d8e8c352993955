"""Promotion on evidence: an alias moves to a new version only when it is measurably better than what it replaces.

`palate promote dpo@3 --alias dpo` compares the candidate with the alias's current target (the *incumbent*; for an
alias that does not exist yet, the candidate's parent, or base) on held-out data, and moves the alias only if all
three checks pass:

1. **margins** - on held-out preference pairs, the candidate's preference accuracy (share of pairs with
   log π(chosen) > log π(rejected)) is at least the incumbent's, and higher, or equal with a higher mean margin;
2. **judged generations** - at the arena's sampling settings, on held-out prompts, the listing judge prefers the
   candidate's answer to the incumbent's (same prompt, same seed) with a win rate whose Wilson 95% lower bound is
   above `min_win_lower` (0.5: better than a coin flip, with confidence). The prompts are two sets: generated
   prompts in phrasing families no adapter trained on, and the prompts a person wrote
   (`eval/data/prompts_handwritten.jsonl`). The bound is on both sets pooled, and the candidate must also not lose
   on either set alone (win rate at least 0.5 on each): the generated families share the generator's vocabulary
   with the training rows, and a candidate that wins only there is not better for people;
3. **degeneration** - the candidate repeats itself (share of repeated word 3-grams) and runs into the length limit
   (share of answers cut by max_tokens) no more than the incumbent, within the policy's slack (0 by default).

Otherwise the alias stays and the result says which check failed, with the numbers. `force=True` moves it anyway
and the registry records that it was forced. `check_evidence` is pure (results in, verdict out) and is what the
tests hold to hand-made numbers; `gather_evidence` runs the models.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.registry import AdapterRegistry, RegistryError, parse_ref


@dataclass(frozen=True)
class PromotionPolicy:
    pairs_data: str = "data/listings/prefs_eval.jsonl"
    prompts_data: str = "data/listings/prompts_heldout.jsonl"
    handwritten_data: str | None = "eval/data/prompts_handwritten.jsonl"  # None: generated prompts only
    pairs: int = 120  # held-out preference pairs scored for the margins check
    # held-out prompts answered by both models for the generations check: all 120 of the report's. On 40 (the default
    # until 2026-12-07) a candidate that wins 6 answers in 10 could not clear the bound even with the hand-written 48.
    prompts: int = 120
    handwritten_prompts: int | None = None  # how many of the hand-written prompts (None: all)
    min_win_lower: float = 0.5
    repetition_slack: float = 0.0
    truncation_slack: float = 0.0
    seed: int = 1234
    max_tokens: int | None = None  # None: the arena's default_max_tokens (what people see)


class PromotionRefused(RuntimeError):
    """The candidate did not beat the incumbent; `.result` holds the checks and numbers."""

    def __init__(self, result: dict):
        self.result = result
        failed = [c for c in result["checks"] if not c["passed"]]
        # an alias that did not exist yet is not created; the candidate was held against its parent (or base)
        where = (f"stays at {result['incumbent']}" if result.get("alias_existed", True)
                 else f"not created; compared with {result['incumbent']}")
        super().__init__(f"{result['candidate']} not promoted to '{result['alias']}' ({where}): "
                         + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))


def incumbent_for(registry: AdapterRegistry, candidate: str, alias: str) -> str:
    """What `alias` serves now, or - for a new alias - what the candidate would replace: its parent, else base."""
    current = registry.aliases().get(alias)
    if current:
        return current
    name, version = parse_ref(candidate)
    parent = registry.get(name, version).parent if version else None
    return parent or "base"


def _margins_summary(margins: dict, ref: str) -> dict:
    model = next(m for m in margins["models"] if m["ref"] == ref or m["label"] == ref)
    return model["summary"]["all"]


def _from_candidate(pairwise: dict, c_label: str, i_label: str) -> tuple[int, int, int, float, float, float]:
    """(wins, losses, ties, win rate, CI low, CI high) of the candidate against the incumbent in a pairwise table."""
    row = next(r for r in pairwise["listing_judge"] if {r["a"], r["b"]} == {c_label, i_label})
    if row["a"] == c_label:
        return row["wins"], row["losses"], row["ties"], row["win_rate"], row["ci_low"], row["ci_high"]
    # the row is written from the other side: mirror it
    return row["losses"], row["wins"], row["ties"], 1 - row["win_rate"], 1 - row["ci_high"], 1 - row["ci_low"]


def check_evidence(candidate: str, incumbent: str, margins: dict, generations: dict,
                   policy: PromotionPolicy = PromotionPolicy()) -> dict:
    """The three checks on stored results (`eval.margins_job.compute_margins` and `eval.generate.generate_all`
    outputs that contain both models, with pairwise listing-judge rows). Returns a JSON-ready verdict."""
    checks = []
    cm, im = _margins_summary(margins, candidate), _margins_summary(margins, incumbent)
    better = cm["accuracy"] > im["accuracy"] or (cm["accuracy"] == im["accuracy"]
                                                 and cm["margin_mean"] > im["margin_mean"])
    checks.append({"name": "margins", "passed": bool(better),
                   "detail": f"held-out preference accuracy {cm['accuracy']:.3f} vs {im['accuracy']:.3f}, mean margin "
                             f"{cm['margin_mean']:.2f} vs {im['margin_mean']:.2f} nats on {cm['n']} pairs",
                   "candidate": {"accuracy": cm["accuracy"], "margin_mean": cm["margin_mean"]},
                   "incumbent": {"accuracy": im["accuracy"], "margin_mean": im["margin_mean"]}})

    c_label = next(m["label"] for m in generations["models"] if m["ref"] == candidate or m["label"] == candidate)
    i_label = next(m["label"] for m in generations["models"] if m["ref"] == incumbent or m["label"] == incumbent)
    wins, losses, ties, rate, low, high = _from_candidate(generations["pairwise"], c_label, i_label)
    per_set = []  # the candidate's record on each prompt set, when the prompts came as several
    for one in generations.get("sets", []):
        w, lo_, t, r, _, _ = _from_candidate(one["pairwise"], c_label, i_label)
        per_set.append({"name": one["name"], "wins": w, "losses": lo_, "ties": t, "win_rate": r, "loses": r < 0.5})
    detail = (f"listing judge prefers the candidate in {wins} of {wins + losses + ties} prompts ({losses} "
              f"losses, {ties} ties): win rate {rate:.2f}, Wilson 95% [{low:.2f}, {high:.2f}]; "
              f"needs a lower bound above {policy.min_win_lower:.2f}")
    if per_set:
        detail += "; per set " + ", ".join(f"{s['name']} {s['wins']}-{s['losses']}-{s['ties']} ({s['win_rate']:.2f}"
                                           f"{', loses' if s['loses'] else ''})" for s in per_set)
        detail += ", needs at least 0.50 on each"
    passed = low > policy.min_win_lower and not any(s["loses"] for s in per_set)
    checks.append({"name": "judged generations", "passed": passed,
                   "detail": detail, "win_rate": rate, "ci_low": low, "ci_high": high,
                   "games": wins + losses + ties, "sets": per_set})

    cs, is_ = generations["summary"][c_label], generations["summary"][i_label]
    rep_ok = cs["repetition"] <= is_["repetition"] + policy.repetition_slack
    cut_ok = (cs["truncated_rate"] or 0.0) <= (is_["truncated_rate"] or 0.0) + policy.truncation_slack
    checks.append({"name": "degeneration", "passed": bool(rep_ok and cut_ok),
                   "detail": f"repeated 3-grams {cs['repetition']:.3f} vs {is_['repetition']:.3f}"
                             f"{'' if rep_ok else ' (more)'}; cut by the length limit {cs['truncated_rate'] or 0:.3f} vs "
                             f"{is_['truncated_rate'] or 0:.3f}{'' if cut_ok else ' (more)'}",
                   "candidate": {"repetition": cs["repetition"], "truncated_rate": cs["truncated_rate"]},
                   "incumbent": {"repetition": is_["repetition"], "truncated_rate": is_["truncated_rate"]}})
    return {"candidate": candidate, "incumbent": incumbent, "passed": all(c["passed"] for c in checks),
            "checks": checks, "policy": asdict(policy),
            "data": {"pairs": margins["data"], "prompts": generations["data"], "sampling": generations["sampling"]}}


async def gather_evidence(registry: AdapterRegistry, candidate: str, incumbent: str, policy: PromotionPolicy,
                          model_dir: Path, vllm_cfg: Any = None, server: str | None = None,
                          progress: Any = print) -> tuple[dict, dict]:
    """(margins, generations) for candidate and incumbent: margins by transformers + PEFT in float32 (the reference
    scorer), generations at the arena's sampling - through `server` (a running `palate serve` that has both
    versions loaded) when given, else by an in-process serving engine built from `vllm_cfg`."""
    from eval.generate import SamplingSettings, ServerGenerator, engine_generator, generate_sets, read_prompts
    from eval.logprobs_hf import HfScorer
    from eval.margins_job import compute_margins

    labels = [candidate, incumbent]
    progress(f"promotion evidence: {candidate} vs {incumbent}, margins on {policy.pairs} held-out pairs ...")
    margins = await compute_margins(HfScorer(model_dir, dtype="float32"), registry, labels, policy.pairs_data,
                                    limit=policy.pairs, progress=progress)
    arena = SamplingSettings.from_arena(seed=policy.seed)
    sampling = SamplingSettings(arena.temperature, arena.top_p, policy.max_tokens or arena.max_tokens, policy.seed)
    sets = [(Path(policy.prompts_data), read_prompts(policy.prompts_data, limit=policy.prompts))]
    if policy.handwritten_data and policy.handwritten_prompts != 0:
        sets.append((Path(policy.handwritten_data),
                     read_prompts(policy.handwritten_data, limit=policy.handwritten_prompts)))
    progress(f"promotion evidence: {sum(len(p) for _, p in sets)} held-out prompts ({len(sets)} sets) at the "
             f"arena's sampling ({sampling}) ...")
    if server:
        generations = await generate_sets(ServerGenerator(server, sampling), labels, sets, sampling,
                                          progress=progress)
    else:
        async with engine_generator(registry, labels, sampling, model_dir, vllm_cfg) as generator:
            generations = await generate_sets(generator, labels, sets, sampling, progress=progress)
    return margins, pool_sets(generations, labels)


def pool_sets(generations: dict, labels: list[str]) -> dict:
    """`generate_sets` output with the sets pooled on top: every prompt's verdicts in one summary and one pairwise
    table (what the checks read), the per-set results kept under "sets"."""
    from eval.generate import summarize_verdicts
    from eval.pairwise import listing_judge_outcomes, win_rates

    items = [item for one in generations["sets"] for item in one["items"]]
    judged = [item for item in items if item["verdicts"]]
    return dict(generations, data=[one["data"] for one in generations["sets"]],
                summary={label: summarize_verdicts([item["verdicts"][label] for item in judged]) for label in labels},
                pairwise={"listing_judge": win_rates(listing_judge_outcomes(items, labels), labels)})


def promote(registry: AdapterRegistry, candidate: str, alias: str, *, force: bool = False,
            policy: PromotionPolicy = PromotionPolicy(), model_dir: Path | None = None, vllm_cfg: Any = None,
            server: str | None = None, evidence: tuple[dict, dict] | None = None, progress: Any = print) -> dict:
    """Move `alias` to `candidate` if it beats the incumbent (see the module docstring), recording the evidence.
    Raises PromotionRefused (alias unchanged) when a check fails and `force` is False. `evidence` passes
    precomputed (margins, generations); otherwise they are gathered with `model_dir` and `vllm_cfg`."""
    name, version = parse_ref(candidate)
    if version is None:
        raise RegistryError(f"promote an exact version (name@version), not '{candidate}'")
    registry.get(name, version)
    incumbent = incumbent_for(registry, candidate, alias)
    if incumbent == candidate:
        raise RegistryError(f"'{alias}' already points at {candidate}")
    if evidence is None:
        if model_dir is None or (vllm_cfg is None and server is None):
            raise ValueError("promote needs model_dir and a vllm_cfg or server to gather evidence (or evidence=...)")
        evidence = asyncio.run(gather_evidence(registry, candidate, incumbent, policy, model_dir, vllm_cfg, server,
                                               progress))
    result = check_evidence(candidate, incumbent, *evidence, policy)
    result["alias"], result["alias_existed"] = alias, alias in registry.aliases()
    if not result["passed"] and not force:
        raise PromotionRefused(result)
    record = registry.promote(alias, candidate, result, forced=force and not result["passed"])
    return dict(result, record=record)

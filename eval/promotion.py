"""Promotion on evidence: an alias moves to a new version only when it is measurably better than what it replaces.

`palate promote dpo@3 --alias dpo` compares the candidate with the alias's current target (the *incumbent*; for an
alias that does not exist yet, the candidate's parent, or base) on held-out data, and moves the alias only if all
three checks pass:

1. **margins** - on held-out preference pairs, the candidate's preference accuracy (share of pairs with
   log π(chosen) > log π(rejected)) is at least the incumbent's, and higher, or equal with a higher mean margin;
2. **judged generations** - at the arena's sampling settings, on held-out prompts, the listing judge prefers the
   candidate's answer to the incumbent's (same prompt, same seed) with a win rate whose Wilson 95% lower bound is
   above `min_win_lower` (0.5: better than a coin flip, with confidence);
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
    pairs: int = 120  # held-out preference pairs scored for the margins check
    prompts: int = 40  # held-out prompts answered by both models for the generations check
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
        super().__init__(f"{result['candidate']} not promoted to '{result['alias']}' (stays at "
                         f"{result['incumbent']}): " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed))


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
    row = next(r for r in generations["pairwise"]["listing_judge"] if {r["a"], r["b"]} == {c_label, i_label})
    if row["a"] == c_label:
        wins, losses, rate, low, high = row["wins"], row["losses"], row["win_rate"], row["ci_low"], row["ci_high"]
    else:  # the row is written from the other side: mirror it
        wins, losses, rate, low, high = row["losses"], row["wins"], 1 - row["win_rate"], 1 - row["ci_high"], 1 - row["ci_low"]
    checks.append({"name": "judged generations", "passed": low > policy.min_win_lower,
                   "detail": f"listing judge prefers the candidate in {wins} of {row['games']} prompts ({losses} "
                             f"losses, {row['ties']} ties): win rate {rate:.2f}, Wilson 95% [{low:.2f}, {high:.2f}]; "
                             f"needs a lower bound above {policy.min_win_lower:.2f}",
                   "win_rate": rate, "ci_low": low, "ci_high": high, "games": row["games"]})

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
    from eval.generate import SamplingSettings, ServerGenerator, engine_generator, generate_all, read_prompts
    from eval.logprobs_hf import HfScorer
    from eval.margins_job import compute_margins
    from eval.pairwise import listing_judge_outcomes, win_rates

    labels = [candidate, incumbent]
    progress(f"promotion evidence: {candidate} vs {incumbent}, margins on {policy.pairs} held-out pairs ...")
    margins = await compute_margins(HfScorer(model_dir, dtype="float32"), registry, labels, policy.pairs_data,
                                    limit=policy.pairs, progress=progress)
    arena = SamplingSettings.from_arena(seed=policy.seed)
    sampling = SamplingSettings(arena.temperature, arena.top_p, policy.max_tokens or arena.max_tokens, policy.seed)
    prompts = read_prompts(policy.prompts_data, limit=policy.prompts)
    progress(f"promotion evidence: {len(prompts)} held-out prompts at the arena's sampling ({sampling}) ...")
    if server:
        generations = await generate_all(ServerGenerator(server, sampling), labels, prompts, sampling,
                                         policy.prompts_data, progress=progress)
    else:
        async with engine_generator(registry, labels, sampling, model_dir, vllm_cfg) as generator:
            generations = await generate_all(generator, labels, prompts, sampling, policy.prompts_data,
                                             progress=progress)
    generations["pairwise"] = {"listing_judge": win_rates(listing_judge_outcomes(generations["items"], labels),
                                                          labels)}
    return margins, generations


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
    result["alias"] = alias
    if not result["passed"] and not force:
        raise PromotionRefused(result)
    record = registry.promote(alias, candidate, result, forced=force and not result["passed"])
    return dict(result, record=record)

"""Subcommands of the eval package: `palate eval margins|generate|report` and `palate loop`.

Each handler parses its flags, prints what it resolved, and calls plain functions (eval.margins_job, eval.generate,
eval.report, eval.loop). Heavy imports happen inside the handlers, so `palate --help` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from eval import votes_cli
from eval.promotion import PromotionPolicy

DEFAULT_PAIRS = "data/listings/prefs_eval.jsonl"
DEFAULT_PROMPTS = "data/listings/sft_eval.jsonl"
# What `palate eval generate` answers by default: prompts in phrasing families no adapter trained on, then the
# trained families (both generated, on held-out listings), then prompts a person wrote (shipped with Palate): the
# generated sets share the generator's vocabulary with the training rows and can overstate what carries over.
HANDWRITTEN_PROMPTS = "eval/data/prompts_handwritten.jsonl"
DEFAULT_GENERATE_SETS = ["data/listings/prompts_heldout.jsonl", DEFAULT_PROMPTS, HANDWRITTEN_PROMPTS]
REPORTS = Path("reports")


def _count(text: str) -> int:
    """argparse type: a whole number, 0 or more (a negative count is refused, not sliced from the end)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected 1 or more, got 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds this package's subcommands to `palate`: `eval margins|agreement|generate|rejudge|report`, `promote`,
    `loop`, `votes export`."""
    ev = subparsers.add_parser("eval", help="Measure the preference shift: margins, judged generations, report.")
    sub = ev.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    for add in (_add_margins, _add_agreement, _add_generate, _add_rejudge, _add_report):
        add(sub)
    _add_promote(subparsers)
    _add_loop(subparsers)
    votes_cli.register(subparsers)


def _add_margins(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("margins", help="Chosen-vs-rejected log-prob margins, accuracy and DPO rewards per model.")
    m.add_argument("--data", default=DEFAULT_PAIRS, help="preference JSONL (TRL format; 'kind' groups the breakdown)")
    m.add_argument("--models", nargs="+", default=["base", "sft", "dpo"], help="base, aliases or name@version")
    m.add_argument("--engine", choices=["vllm", "hf"], default="vllm",
                   help="vllm: the serving engine's prompt log-probs (default); hf: transformers + PEFT reference")
    m.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="arithmetic of the scorer")
    m.add_argument("--limit", type=int, default=None, help="score only the first N pairs")
    m.add_argument("--kinds", nargs="*", default=None, help="only these near-miss kinds")
    _common(m)
    m.set_defaults(handler=_margins)


def _add_agreement(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("agreement", help="Does a DPO version's implicit reward agree with people's arena votes? "
                       "Rate with Wilson 95%%, overall and by reason tag, and its parent's.")
    a.add_argument("--model", default="dpo", help="a DPO alias or name@version")
    a.add_argument("--votes", choices=["people", "simulated"], default="people",
                   help="whose votes: people's (default) or the simulated judges' of `palate loop` (never mixed)")
    a.add_argument("--no-record", action="store_true",
                   help="do not record the result in the registry (/v1/models and the arena leaderboard show the "
                        "latest record per version and vote source)")
    a.add_argument("--database-url", default=None, help="vote store (default: server.database_url)")
    a.add_argument("--engine", choices=["vllm", "hf"], default="hf",
                   help="hf: transformers + PEFT (default); vllm: the serving engine's prompt log-probs")
    a.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="arithmetic of the scorer")
    _common(a)
    a.set_defaults(handler=_agreement)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="Each model answers held-out prompts; the listing judge scores every answer.")
    g.add_argument("--data", nargs="+", default=DEFAULT_GENERATE_SETS,
                   help="held-out prompt files (SFT, prompt or preference JSONL with 'listing'), each judged apart "
                        "(default: held-out phrasing families, trained families, prompts written by hand)")
    g.add_argument("--models", nargs="+", default=["base", "sft", "dpo"])
    g.add_argument("--server", default=None, help="generate through this OpenAI-compatible server (default: an "
                                                  "in-process serving engine)")
    g.add_argument("--limit", type=int, default=60, help="number of prompts per file")
    g.add_argument("--temperature", type=float, default=None, help="default: the arena's (configs/arena.yaml)")
    g.add_argument("--top-p", type=float, default=None, help="default: the arena's")
    g.add_argument("--max-tokens", type=int, default=None, help="default: the arena's default_max_tokens")
    g.add_argument("--seed", type=int, default=1234, help="prompt i uses seed+i, the same for every model")
    g.add_argument("--llm-judge-url", default=None, help="OpenAI-compatible base URL of an LLM judge (optional)")
    g.add_argument("--llm-judge-model", default=None, help="model name at the LLM judge endpoint")
    g.add_argument("--llm-judge-key", default="none", help="API key for the LLM judge endpoint")
    _common(g)
    g.set_defaults(handler=_generate)


def _add_rejudge(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("rejudge", help="Judge the stored answers of a generations file again with the listing judge "
                                       "as it is now (no model runs); writes a new generations file.")
    j.add_argument("generations", help="generations JSON written by `palate eval generate`")
    j.add_argument("--out", default=None, help="default: reports/generations-<UTC time>.json (what `palate eval "
                                               "report` reads next)")
    j.set_defaults(handler=_rejudge)


def _add_report(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="Markdown + PNG plots in reports/<time>/ from the latest margins/generations.")
    r.add_argument("--margins", default=None, help="margins JSON (default: the newest reports/margins-*.json)")
    r.add_argument("--generations", default=None, help="generations JSON (default: the newest)")
    r.add_argument("--database-url", default=None, help="vote store for the arena leaderboard (default: config)")
    r.add_argument("--registry", default=None, help="adapter registry (training curves; default: config)")
    r.add_argument("--config", default=None, help="server YAML (default: configs/server.yaml)")
    r.add_argument("--out-dir", default=None, help="default: reports/<UTC time>/")
    r.set_defaults(handler=_report)


def _add_promote(subparsers: argparse._SubParsersAction) -> None:
    pr = subparsers.add_parser("promote", help="Move an alias to a version only if it beats the alias's current "
                                               "target on held-out margins, judged generations and degeneration.")
    pr.add_argument("ref", help="the candidate, an exact version: dpo@3")
    pr.add_argument("--alias", required=True, help="the alias to move (e.g. dpo)")
    pr.add_argument("--force", action="store_true", help="move it even if a check fails (recorded as forced)")
    pr.add_argument("--pairs", type=_positive, default=PromotionPolicy.pairs,
                    help="held-out preference pairs for the margins check")
    pr.add_argument("--prompts", type=_positive, default=PromotionPolicy.prompts,
                    help="generated held-out prompts for the generations check")
    pr.add_argument("--handwritten", type=_count, default=None,
                    help=f"hand-written prompts ({HANDWRITTEN_PROMPTS}) for the generations check, judged with the "
                         "generated ones; the candidate must not lose on either set (default: all; 0: none)")
    pr.add_argument("--min-win-lower", type=float, default=0.5,
                    help="the candidate's Wilson 95%% lower bound on its win rate must be above this")
    pr.add_argument("--registry", default=None, help="adapter registry root (default: server config adapter_root)")
    pr.add_argument("--config", default=None, help="server YAML (default: configs/server.yaml)")
    pr.set_defaults(handler=_promote)


def _add_loop(subparsers: argparse._SubParsersAction) -> None:
    loop = subparsers.add_parser("loop", help="Close the loop on a running server: simulated arena votes -> export "
                                              "-> DPO -> hot-load -> alias -> check.")
    loop.add_argument("--server", default="http://127.0.0.1:8000", help="base URL of a running `palate serve`")
    loop.add_argument("--admin-token", default=None, help="bearer token for /admin (default: $PALATE_ADMIN_TOKEN)")
    loop.add_argument("--votes", type=int, default=60, help="arena votes to cast (at least)")
    loop.add_argument("--min-pairs", type=int, default=4, help="keep voting until this many votes are usable as "
                                                             "pairs (decisive, both answers complete)")
    loop.add_argument("--max-votes", type=int, default=180, help="never cast more votes than this")
    loop.add_argument("--max-tokens", type=int, default=None, help="per side (default: the arena's)")
    loop.add_argument("--prompts", default=DEFAULT_PROMPTS, help="held-out prompts with listing facts")
    loop.add_argument("--registry", default="adapters", help="registry the server serves from")
    loop.add_argument("--database-url", default=None, help="export straight from this vote store (default: through "
                                                          "the server's /v1/arena/export)")
    loop.add_argument("--name", default="dpo", help="adapter name and alias to train and move")
    loop.add_argument("--from", dest="parent", default="dpo", help="adapter to continue from (its reference)")
    loop.add_argument("--max-steps", type=int, default=None, help="DPO steps (default: the quick profile's)")
    loop.add_argument("--train-flag", action="append", default=[], help="extra `palate train dpo` flag (repeatable)")
    loop.add_argument("--out-dir", default=None, help="where the export and loop record go (default: reports/loop-<time>)")
    loop.add_argument("--concurrency", type=int, default=4, help="battles in flight at once")
    loop.add_argument("--promote-pairs", type=_positive, default=PromotionPolicy.pairs,
                      help="held-out pairs for the promotion margins check")
    loop.add_argument("--promote-prompts", type=_positive, default=PromotionPolicy.prompts,
                      help="held-out prompts for the promotion generations check")
    loop.add_argument("--promote-handwritten", type=_count, default=None,
                      help="hand-written prompts judged with them (default: all; 0: none)")
    loop.add_argument("--force-promote", action="store_true", help="move the alias even if a promotion check "
                                                                   "fails (recorded as forced)")
    loop.set_defaults(handler=_loop)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", default=None, help="adapter registry root (default: server config adapter_root)")
    p.add_argument("--config", default=None, help="server YAML (default: configs/server.yaml)")
    p.add_argument("--out", default=None, help="output JSON (default: reports/<what>-<UTC time>.json)")


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _write(result: dict, out: str | None, what: str) -> Path:
    path = Path(out) if out else REPORTS / f"{what}-{_stamp()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path


def _registry(args):
    from core.config import load_config, project_path
    from core.registry import AdapterRegistry

    cfg = load_config(args.config)
    return cfg, AdapterRegistry(project_path(args.registry) if args.registry else cfg.server.registry_root())


def _agreement(args: argparse.Namespace) -> int:
    from core.arena_config import load_arena_config
    from core.config import PROJECT_ROOT
    from core.votes import open_store
    from eval.agreement import agreement_records, compute_agreement, rate_text
    from eval.engine import with_scorer

    cfg, registry = _registry(args)
    store = open_store(args.database_url or cfg.server.database_url, root=PROJECT_ROOT)
    battles = store.voted_battles()
    store.close()
    simulated = load_arena_config().simulated_ui_versions
    print(f"palate eval agreement: {args.model} | {len(battles)} voted battles | {args.votes} | "
          f"engine {args.engine}", flush=True)

    result = asyncio.run(with_scorer(args.engine, cfg, registry, [args.model], lambda scorer, handles: compute_agreement(
        scorer, registry, args.model, battles, simulated, handles=handles, source=args.votes), dtype=args.dtype))
    path = _write(result, args.out, f"agreement-{args.votes}")
    whose = {"people": "people's", "simulated": "simulated judges'"}[args.votes]
    print(f"{whose} votes scored: {result['votes']}; excluded: {result['excluded']}")
    for version in result["versions"]:
        tags = ", ".join(f"{t} {r['agree']:g}/{r['n']}" for t, r in version["by_reason"].items())
        print(f"  {version['ref']} vs {version['reference']}: agreement {rate_text(version['overall'])} ({tags})")
    if not args.no_record and result["votes"]:
        for ref, record in agreement_records(result):
            registry.record_evaluation(ref, "agreement", {**record, "report": str(path)})
        print(f"recorded in {registry.root}/evaluations.jsonl")
    print(f"wrote {path}")
    return 0


def _margins(args: argparse.Namespace) -> int:
    from eval.engine import with_scorer
    from eval.margins_job import compute_margins
    from eval.report_tables import margins_table

    cfg, registry = _registry(args)
    print(f"palate eval margins: {args.data} | models {args.models} | engine {args.engine} ({args.dtype})", flush=True)

    kinds = set(args.kinds) if args.kinds else None
    result = asyncio.run(with_scorer(args.engine, cfg, registry, args.models, lambda scorer, handles: compute_margins(
        scorer, registry, args.models, args.data, limit=args.limit, kinds=kinds, handles=handles), dtype=args.dtype))
    path = _write(result, args.out, "margins")
    print(margins_table(result))
    print(f"wrote {path}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from eval.generate import SamplingSettings, ServerGenerator, engine_generator, generate_sets, read_prompts
    from eval.pairwise import llm_judge_outcomes, openai_judge, win_rates
    from eval.report_tables import generations_table

    arena = SamplingSettings.from_arena(seed=args.seed)
    sampling = SamplingSettings(arena.temperature if args.temperature is None else args.temperature,
                                arena.top_p if args.top_p is None else args.top_p,
                                arena.max_tokens if args.max_tokens is None else args.max_tokens, args.seed)
    sets = [(Path(path), read_prompts(path, limit=args.limit)) for path in args.data]
    print(f"palate eval generate: {' + '.join(f'{len(p)} prompts from {path}' for path, p in sets)} | "
          f"models {args.models} | {sampling}", flush=True)

    async def run() -> dict:
        if args.server:
            return await generate_sets(ServerGenerator(args.server, sampling), args.models, sets, sampling)
        cfg, registry = _registry(args)
        # as served: the server's own dtype
        async with engine_generator(registry, args.models, sampling, cfg.model.resolved_dir(), cfg.server.vllm) as gen:
            return await generate_sets(gen, args.models, sets, sampling)

    result = asyncio.run(run())
    if args.llm_judge_url:
        judge = openai_judge(args.llm_judge_url, args.llm_judge_model or "default", api_key=args.llm_judge_key)
        for one in result["sets"]:
            outcomes, stats = asyncio.run(llm_judge_outcomes(one["items"], args.models, judge))
            one["pairwise"]["llm_judge"] = win_rates(outcomes, args.models)
            one["pairwise"]["llm_judge_stats"] = dict(stats, endpoint=args.llm_judge_url, model=args.llm_judge_model)
    path = _write(result, args.out, "generations")
    for one in result["sets"]:
        print(f"\n## {one['name']}\n\n{generations_table(one)}")
    print(f"wrote {path}")
    return 0


def _rejudge(args: argparse.Namespace) -> int:
    from eval.generate import rejudge, result_sets
    from eval.report_tables import generations_table

    source = Path(args.generations)
    try:
        generations = json.loads(source.read_text())
        result = rejudge(generations)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"palate eval rejudge: {source} is not a generations file `palate eval generate` wrote ({exc!r})",
              file=sys.stderr)
        return 2
    path = _write(result, args.out, "generations")
    for one in result_sets(result):
        print(f"\n## {one['name']}\n\n{generations_table(one)}")
    print(f"wrote {path} (the answers of {source}, judged again)")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from core.registry import RegistryError
    from eval.promotion import PromotionPolicy, PromotionRefused, promote

    cfg, registry = _registry(args)
    policy = PromotionPolicy(pairs=args.pairs, prompts=args.prompts, handwritten_prompts=args.handwritten,
                             min_win_lower=args.min_win_lower)
    try:
        result = promote(registry, args.ref, args.alias, force=args.force, policy=policy,
                         model_dir=cfg.model.resolved_dir(), vllm_cfg=cfg.server.vllm)
    except PromotionRefused as exc:
        for check in exc.result["checks"]:
            print(f"  {'PASS' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")
        print(f"palate promote: {exc}. Use --force to move it anyway (recorded as forced).", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"palate promote: {exc}", file=sys.stderr)
        return 2
    for check in result["checks"]:
        print(f"  {'PASS' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")
    how = "forced" if result["record"]["forced"] else "on evidence"
    print(f"palate promote: '{args.alias}' -> {args.ref} ({how}; was {result['record']['from'] or 'unset'})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from eval.report import latest, write_report

    margins = Path(args.margins) if args.margins else latest(REPORTS, "margins-*.json")
    generations = Path(args.generations) if args.generations else latest(REPORTS, "generations-*.json")
    if margins is None and generations is None:
        print("palate eval report: no margins or generations results; run `palate eval margins` and "
              "`palate eval generate` first.", file=sys.stderr)
        return 2
    cfg, registry = _registry(args)
    database_url = args.database_url or cfg.server.database_url
    out_dir = Path(args.out_dir) if args.out_dir else REPORTS / _stamp()
    agreement = [p for p in (latest(REPORTS, f"agreement-{source}-*.json") for source in ("people", "simulated")) if p]
    path = write_report(out_dir, margins=margins, generations=generations, registry=registry,
                        database_url=database_url, agreement=agreement)
    print(f"wrote {path}")
    return 0


def _loop(args: argparse.Namespace) -> int:
    import os

    from eval.loop import LoopSettings, run_loop

    token = args.admin_token or os.environ.get("PALATE_ADMIN_TOKEN")
    if not token:
        print("palate loop: the admin API needs a token: --admin-token or PALATE_ADMIN_TOKEN.", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir) if args.out_dir else REPORTS / f"loop-{_stamp()}"
    settings = LoopSettings(server=args.server, admin_token=token, votes=args.votes, min_pairs=args.min_pairs,
                            max_votes=args.max_votes, max_tokens=args.max_tokens, prompts=Path(args.prompts),
                            registry=Path(args.registry), database_url=args.database_url, name=args.name,
                            parent=args.parent, max_steps=args.max_steps, train_flags=list(args.train_flag),
                            out_dir=out_dir, concurrency=args.concurrency, promote_pairs=args.promote_pairs,
                            promote_prompts=args.promote_prompts, promote_handwritten=args.promote_handwritten,
                            force_promote=args.force_promote)
    record = asyncio.run(run_loop(settings))
    print(json.dumps({k: record[k] for k in ("votes", "export", "new_version", "alias", "promotion", "answer")},
                     indent=1, default=str))
    return 0

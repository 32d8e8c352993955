"""`palate votes export`: arena votes as DPO pairs (or KTO rows), in vote order or disagreement order (the pairs the
current DPO version gets most wrong first, scored by `eval.disagreement`)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `palate votes export`."""
    votes = subparsers.add_parser("votes", help="Export arena votes as DPO pairs.")
    votes_sub = votes.add_subparsers(dest="votes_command", metavar="ACTION", required=True)
    export = votes_sub.add_parser(
        "export", help="Write arena votes as DPO pairs (TRL conversational JSONL) with a lint summary.",
        description="Reads the vote store (server.database_url of --config, or --database-url) and writes "
                    "prompt/chosen/rejected rows to --out, plus <out>.lint.json. Skips ties, both-bad, errored or "
                    "truncated sides, identical answers, same-model pairs and identity leaks; merges repeated "
                    "(prompt, pair) judgments by majority.")
    export.add_argument("--out", required=True, help="output JSONL path, e.g. data/arena-pairs.jsonl")
    export.add_argument("--config", default=None, help="server YAML whose server.database_url to read")
    export.add_argument("--database-url", default=None, help="vote store URL (overrides --config)")
    export.add_argument("--server", default=None, help="read through a server's /v1/arena/export instead")
    export.add_argument("--admin-token", default=None,
                        help="with --server: the server's admin token (default $PALATE_ADMIN_TOKEN); the export "
                             "needs it unless the server sets export_access: open")
    export.add_argument("--format", choices=["dpo", "kto"], default="dpo",
                        help="dpo: prompt/chosen/rejected pairs (default); kto: TRL's unpaired prompt/completion/"
                             "label rows (both-bad votes mark both answers undesirable)")
    export.add_argument("--order", choices=["votes", "disagreement"], default="votes",
                        help="votes: vote order (default); disagreement: pairs whose loser --model prefers most "
                             "strongly first, its implicit-reward margin in provenance (DPO format only)")
    export.add_argument("--model", default="dpo", help="with --order disagreement: the DPO alias or name@version")
    export.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                        help="with --order disagreement: scorer (hf: transformers + PEFT; vllm: serving engine)")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    import os

    from core.kto_export import export_kto, format_kto_summary
    from core.vote_export import ExportResult, export_pairs, format_summary, write_export

    if args.server:
        import asyncio

        from core.arena_client import ArenaClient, ArenaClientError

        token = args.admin_token or os.environ.get("PALATE_ADMIN_TOKEN")
        try:
            payload = asyncio.run(ArenaClient(args.server).export(admin_token=token, format=args.format))
        except ArenaClientError as exc:
            print(f"palate votes export: the server refused: {exc.message}", file=sys.stderr)
            return 2
        result = ExportResult(payload["rows"], payload["summary"])
    else:
        from core.config import PROJECT_ROOT, load_config
        from core.votes import VoteStore

        url = args.database_url or load_config(args.config).server.database_url
        store = VoteStore(url, root=PROJECT_ROOT)
        try:
            battles = store.voted_battles()
            result = export_kto(battles) if args.format == "kto" else export_pairs(battles)
        finally:
            store.close()
    if args.order == "disagreement":
        if args.format != "dpo":
            print("palate votes export: --order disagreement needs --format dpo", file=sys.stderr)
            return 2
        result = ExportResult(_disagreement_order(args, result.rows), result.summary)
    summary = write_export(result, args.out)
    print(format_kto_summary(summary) if args.format == "kto" else format_summary(summary))
    print(json.dumps({"out": summary["out"], "rows": summary["rows"], "sha256": summary["sha256"]}), file=sys.stderr)
    return 0


def _disagreement_order(args: argparse.Namespace, rows: list[dict]) -> list[dict]:
    """Rows scored under --model and its reference (eval.disagreement), most negative reward margin first."""
    import asyncio

    from core.config import load_config
    from core.registry import AdapterRegistry
    from eval.disagreement import order_by_disagreement
    from eval.engine import with_scorer

    cfg = load_config(args.config)
    registry = AdapterRegistry(cfg.server.registry_root())
    return asyncio.run(with_scorer(args.engine, cfg, registry, [args.model], lambda scorer, handles: order_by_disagreement(
        scorer, registry, args.model, rows, handles=handles)))

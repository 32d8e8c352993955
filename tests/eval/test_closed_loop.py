"""The closed loop, end to end on the real server (base + tiny sft@1 + dpo@1 in one vLLM engine):
simulated voters -> >= 24 arena votes through the API -> `palate votes export` -> `palate train dpo --from dpo`
-> hot-load without restart -> alias moves -> answers through the OpenAI client -> lineage in /v1/models."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest

from core.registry import AdapterRegistry

pytestmark = pytest.mark.e2e
VOTES = 24


@pytest.fixture()
def prompts(tmp_path):
    from training.data import build_rows

    rows = build_rows(seed=3, n_listings=40)["sft_eval.jsonl"]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_closed_loop(live_server, prompts, tmp_path):
    from core.config import PROJECT_ROOT
    from core.votes import VoteStore
    from eval.loop import LoopSettings, run_loop

    registry = AdapterRegistry(live_server.registry_root)
    store = VoteStore(live_server.database_url, root=PROJECT_ROOT)
    votes_before = store.count_votes()
    pid_before = live_server.process.pid
    before = registry.versions("dpo")

    settings = LoopSettings(
        server=live_server.url, admin_token=live_server.admin_token, votes=VOTES, min_pairs=2, max_votes=60,
        prompts=prompts,
        registry=live_server.registry_root, database_url=live_server.database_url, name="dpo", parent="dpo",
        max_steps=2, train_flags=["--per_device_train_batch_size", "2", "--max_length", "256", "--logging_steps", "1",
                                  "--save_strategy", "no", "--max_eval_rows", "4", "--on_policy_rows", "0"],
        # 8 battles in flight: 16 sequences, the test server's max_num_seqs (the votes are what is tested, not
        # the CLI's default of 4)
        # 96 tokens a side (the arena's default is 192): the votes, the export and the gate's generations are what
        # is tested, not the answers' length; half the tokens halve the two generation steps.
        out_dir=tmp_path / "loop", max_tokens=96, concurrency=8, progress=lambda _: None,
        # two DPO steps cannot be expected to beat their parent: the gate runs, and the move is recorded as forced
        # unless the evidence happened to pass
        promote_pairs=4, promote_prompts=4, promote_handwritten=2, force_promote=True)
    try:
        record = asyncio.run(run_loop(settings))

        # votes were stored through the API
        cast = record["votes"]["cast"]
        assert cast >= VOTES and record["votes"]["usable"] >= 2
        assert store.count_votes() - votes_before == cast
        # the export is a real file whose hash is the one recorded everywhere downstream
        export = tmp_path / "loop" / "arena-pairs.jsonl"
        sha = hashlib.sha256(export.read_bytes()).hexdigest()
        rows = [json.loads(line) for line in export.read_text().splitlines() if line.strip()]
        assert record["export"]["sha256"] == sha and record["export"]["rows"] == len(rows) >= 2
        assert all({"prompt", "chosen", "rejected"} <= set(r) for r in rows)
        # a new immutable version, trained on the export, from the previous dpo
        new = registry.get("dpo", registry.versions("dpo")[-1])
        assert registry.versions("dpo") == before + [new.version]
        assert new.meta["dataset_sha256"] == sha and new.parent == f"dpo@{before[-1]}"
        # hot-loaded in the same process, alias moved (in the server and in the registry)
        assert live_server.process.poll() is None and live_server.process.pid == pid_before
        assert record["alias"] == {"dpo": new.ref} and registry.aliases()["dpo"] == new.ref
        promoted = registry.promotion_of(new.ref, "dpo")
        assert promoted["from"] == f"dpo@{before[-1]}" and promoted["forced"] == record["promotion"]["forced"]
        assert {c["name"] for c in promoted["evidence"]["checks"]} == {"margins", "judged generations",
                                                                       "degeneration"}
        assert promoted["forced"] == (not all(c["passed"] for c in promoted["evidence"]["checks"]))
        # it answers through the OpenAI client
        from openai import OpenAI

        client = OpenAI(base_url=live_server.v1, api_key="x")
        reply = client.chat.completions.create(model="dpo", messages=[{"role": "user", "content": "Describe a loft."}],
                                               max_tokens=16, temperature=0)
        assert reply.choices[0].message.content and record["answer"]["text"]
        # /v1/models shows the lineage back to the export
        card = next(c for c in httpx.get(f"{live_server.v1}/models").json()["data"] if c["id"] == "dpo")
        lineage = card["palate"]["lineage"]
        assert card["root"] == new.ref and lineage[0]["ref"] == new.ref and lineage[0]["dataset_sha256"] == sha
        assert [step["ref"] for step in lineage[1:]][:1] == [f"dpo@{before[-1]}"] and lineage[-1]["ref"] == "base"
    finally:
        store.close()
        # put the shared server back as the fixture found it: the watcher unloads the old target when the alias
        # moves, so load it again (a no-op when still loaded) and point the alias at it, or later tests lose it
        restored = httpx.post(f"{live_server.url}/admin/adapters", json={"ref": f"dpo@{before[-1]}", "alias": "dpo"},
                              headers=live_server.admin_headers(), timeout=120)
        assert restored.status_code == 200, restored.text

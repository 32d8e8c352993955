"""Palate's CPU LoRA kernels inside the real vLLM engine (the shared `live_server`, which runs them by default).

The case vLLM 0.32's own CPU kernels get wrong: a base request (LoRA index -1) batched while every LoRA slot holds an
adapter. They read -1 as the last slot and add that adapter's delta to the base tokens; the grouped kernels never
touch a token without an adapter. Greedy decoding makes "the same output" exact for the base request. An adapter's
own answer may split from its answer alone only where its two best tokens were a near-tie (another batch shape sums
in another order: seen with the two-step test adapters, whose first token is a 0.015-nat tie in float32).
"""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from core.registry import AdapterRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

PROMPT = "Describe a 2-bed condo near downtown with in-unit laundry and a parking spot."
TOKENS = 32


def _copy_version(registry: AdapterRegistry, source_ref: str, name: str, tmp) -> str:
    """The same weights under a new name: a distinct LoRA id, so it takes a slot of its own."""
    source = registry.resolve(source_ref)
    staging = tmp / f"staging-{name}"
    shutil.copytree(source.path, staging)
    meta = {k: v for k, v in source.meta.items() if k not in {"name", "version", "content_sha256", "created"}}
    return registry.add(name, staging, meta, move_alias=False).ref


async def _greedy(client: httpx.AsyncClient, url: str, model: str) -> tuple[list[str], list[dict]]:
    """The greedy answer's tokens and, per position, the two most likely tokens with their log-probs."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "logprobs": 2}
    response = await client.post(f"{url}/v1/completions", json=body)
    assert response.status_code == 200, response.text
    logprobs = response.json()["choices"][0]["logprobs"]
    return logprobs["tokens"], logprobs["top_logprobs"]


# Sums in another order (another batch shape) move a log-prob by less than this: far less in float32; in bfloat16
# (what `vllm.dtype: auto` picks on a CPU with bf16 instructions) logits are rounded to steps of up to 1/8 at these
# magnitudes, so one rounding step either way.
NEAR_TIE_NATS = {"float32": 0.05, "bfloat16": 0.25}


def engine_dtype(live_server) -> str:
    """The dtype the shared server's engine computes in, as its log says at start-up."""
    log = live_server.log_path.read_text(errors="replace")
    return "bfloat16" if "engine dtype: bfloat16" in log else "float32"


def same_or_split_at_a_near_tie(model: str, alone: tuple[list[str], list[dict]],
                                batched: tuple[list[str], list[dict]], tie_nats: float) -> None:
    """An adapter's batched answer equals its answer alone, or follows it token for token up to a position where the
    two most likely tokens were within `tie_nats` of each other alone (batching changes the summation order, which
    may flip such a tie and nothing else). Another adapter's delta on these tokens (the bug this file tests for)
    changes log-probs by far more, at positions that are not ties."""
    tokens, tops = alone
    other = batched[0]
    split = next((i for i, (a, b) in enumerate(zip(tokens, other)) if a != b), None)
    if split is None:
        assert len(tokens) == len(other), model
        return
    top = tops[split]
    assert other[split] in top, f"{model}: batched token {other[split]!r} at {split} is not among alone's top two {top}"
    gap = abs(top[tokens[split]] - top[other[split]])
    assert gap <= tie_nats, f"{model}: batched answer leaves alone's at {split} where the gap is {gap:.3f} nats"


@pytest.fixture(scope="module")
def every_slot_filled(live_server, tmp_path_factory):
    """As many distinct adapters loaded as the engine has LoRA slots (max_loras 4: sft@1, dpo@1 and two copies)."""
    registry = AdapterRegistry(live_server.registry_root)
    tmp = tmp_path_factory.mktemp("slots")
    refs = ["sft@1", "dpo@1", _copy_version(registry, "sft@1", "slotfill-a", tmp),
            _copy_version(registry, "dpo@1", "slotfill-b", tmp)]
    auth = live_server.admin_headers()
    served = {a["id"] for a in httpx.get(f"{live_server.url}/admin/adapters", headers=auth, timeout=60).json()["loaded"]}
    for ref in refs:  # loading a loaded version is a no-op; an earlier test may have unloaded sft@1 or dpo@1
        response = httpx.post(f"{live_server.url}/admin/adapters", json={"ref": ref}, headers=auth, timeout=120)
        assert response.status_code == 200, response.text
    yield refs
    for ref in refs:
        if ref not in served:  # leave the shared server as the fixture found it
            httpx.delete(f"{live_server.url}/admin/adapters/{ref}", headers=auth, timeout=120)


def test_the_server_runs_palates_kernels(live_server):
    """The plugin reached the engine-core process (where vLLM builds the LoRA layers) and chose the kernels."""
    log = live_server.log_path.read_text(errors="replace")
    assert "Palate CPU LoRA kernels active" in log, live_server.log_tail()


async def _greedy_from(address: str, url: str, model: str) -> list[int]:
    """From its own loopback address: admission control gives each address its own fair share, so these requests
    run side by side instead of queueing behind one client's limit."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(timeout=300, transport=transport) as client:
        return await _greedy(client, url, model)


def test_base_batched_with_every_slot_occupied_is_exactly_base_alone(live_server, every_slot_filled):
    async def scenario():
        async with httpx.AsyncClient(timeout=300) as client:
            alone = {model: await _greedy(client, live_server.url, model) for model in ["base", *every_slot_filled]}
        # One batch: the base request and one request per slot, sent together.
        models = ["base", *every_slot_filled]
        together = await asyncio.gather(*(_greedy_from(f"127.0.0.{10 + i}", live_server.url, m)
                                          for i, m in enumerate(models)))
        return alone, list(zip(models, together))

    alone, together = asyncio.run(scenario())
    tie_nats = NEAR_TIE_NATS[engine_dtype(live_server)]
    for model, answer in together:
        if model == "base":  # exactly: no adapter's delta may reach a token without an adapter
            assert answer[0] == alone[model][0], "base batched with every LoRA slot occupied differs from base alone"
        else:
            same_or_split_at_a_near_tie(model, alone[model], answer, tie_nats)
    # An adapter really changes the output (else the base check proves nothing: vLLM's own kernels add the last
    # slot's delta to base tokens), and a copy is its source.
    assert any(alone[m][0] != alone["base"][0] for m in every_slot_filled)
    assert alone["slotfill-a@1"][0] == alone["sft@1"][0] and alone["slotfill-b@1"][0] == alone["dpo@1"][0]

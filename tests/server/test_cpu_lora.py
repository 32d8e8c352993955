"""Palate's CPU LoRA kernels against a plain reference, through the same wrapper interface vLLM's layers call.

Reference for a token t on the adapter in slot s, for each output slice k at offset o_k:
    y[t, o_k : o_k + n_k] += scale * x[t] @ A_k[s].T @ B_k[s].T        (float64)
and nothing for a token without an adapter (LoRA id 0, slot -1): its output row must stay bit-for-bit the same.
No engine here: random shapes, every LoRA slot occupied, mixed adapters, base tokens, slices, padded ranks.
"""

from __future__ import annotations

import importlib.metadata
import random

import pytest
import torch

from server.engines import cpu_lora
from server.engines.cpu_lora import PalatePunicaWrapper, fuse_slot, plan_tokens

SLOTS = 4


def _mapping(token_ids: list[int], prompt_ids: list[int], is_prefill: bool):
    from vllm.lora.layers import LoRAMapping

    return LoRAMapping(tuple(token_ids), tuple(prompt_ids), is_prefill=is_prefill)


def _stacked(rng: torch.Generator, rows: int, cols: int, ranks: list[int], rank_axis: int, dtype) -> torch.Tensor:
    """vLLM's (slots, 1, rows, cols) layout, each slot's rank components past its own rank left at zero."""
    weights = torch.randn(SLOTS, 1, rows, cols, generator=rng) * 0.1
    for slot, rank in enumerate(ranks):
        if rank_axis == 0:
            weights[slot, 0, rank:, :] = 0
        else:
            weights[slot, 0, :, rank:] = 0
    return weights.to(dtype)


class Case:
    """A random layer (K slices), a random batch and the wrapper's view of it."""

    def __init__(self, seed: int, dtype=torch.float32, is_prefill: bool = True, tokens: int | None = None,
                 contiguous: bool = False):
        rnd = random.Random(seed)
        rng = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.d_in = rnd.choice([16, 48, 96])
        self.max_rank = rnd.choice([8, 16, 32])
        self.slices = tuple(rnd.choice([8, 24, 40]) for _ in range(rnd.choice([1, 2, 3])))
        # Per slot and slice: ranks below the slot width (padding) and a slot-wide rank of 0 (nothing loaded) too.
        self.ranks = [[rnd.choice([0, 1, self.max_rank // 2, self.max_rank]) for _ in range(SLOTS)]
                      for _ in self.slices]
        self.a = tuple(_stacked(rng, self.max_rank, self.d_in, r, 0, dtype) for r in self.ranks)
        self.b = tuple(_stacked(rng, n, self.max_rank, r, 1, dtype) for n, r in zip(self.slices, self.ranks))
        self.slot_to_id = [11, 12, 13, 14]  # every slot occupied
        n = tokens or rnd.randint(1, 40)
        choices = [0, *self.slot_to_id]  # 0: the base model
        if contiguous:
            self.token_ids = sorted((rnd.choice(choices) for _ in range(n)), key=choices.index)
        else:
            self.token_ids = [rnd.choice(choices) for _ in range(n)]
        self.x = torch.randn(n, self.d_in, generator=rng).to(dtype)
        self.y = torch.randn(n, sum(self.slices), generator=rng).to(dtype)
        self.scale = rnd.choice([1.0, 0.5])
        self.wrapper = PalatePunicaWrapper(1024, 1024, "cpu")
        self.wrapper.update_metadata(_mapping(self.token_ids, self.token_ids, is_prefill), self.slot_to_id,
                                     SLOTS + 1, 1000)

    def slot(self, token: int) -> int:
        lora_id = self.token_ids[token]
        return self.slot_to_id.index(lora_id) if lora_id else -1

    def reference(self) -> torch.Tensor:
        y = self.y.double().clone()
        for t in range(len(self.token_ids)):
            s = self.slot(t)
            if s < 0:
                continue
            offset = 0
            for a, b, n in zip(self.a, self.b, self.slices):
                y[t, offset:offset + n] += self.scale * (self.x[t].double() @ a[s, 0].double().T) @ b[s, 0].double().T
                offset += n
        return y

    def base_rows(self) -> list[int]:
        return [t for t, lora_id in enumerate(self.token_ids) if lora_id == 0]

    def tolerance(self) -> dict:
        return {"atol": 1e-5, "rtol": 1e-5} if self.dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}


def _check(case: Case, y: torch.Tensor) -> None:
    expected = case.reference()
    torch.testing.assert_close(y.double(), expected, **case.tolerance())
    base = case.base_rows()
    assert torch.equal(y[base], case.y[base]), "a token without an adapter was changed"


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("is_prefill", [True, False])
def test_fused_lora_linear_matches_reference(seed, dtype, is_prefill):
    case = Case(seed, dtype, is_prefill)
    y = case.y.clone()
    case.wrapper.add_lora_linear(y, case.x, case.a, case.b, case.scale, case.slices)
    _check(case, y)


@pytest.mark.parametrize("seed", range(4))
def test_fused_lora_linear_on_prefill_sized_groups(seed):
    """Groups above SMALL_GROUP tokens take the one-matmul-per-slice path; contiguous and scattered rows."""
    for contiguous in (True, False):
        case = Case(100 + seed, torch.bfloat16, tokens=300, contiguous=contiguous)
        y = case.y.clone()
        case.wrapper.add_lora_linear(y, case.x, case.a, case.b, case.scale, case.slices)
        _check(case, y)


def test_rows_past_the_steps_mapping_get_no_adapter():
    case = Case(9, tokens=10)
    x = torch.cat([case.x, torch.randn(3, case.d_in)])
    y = torch.cat([case.y, torch.randn(3, sum(case.slices))])
    before = y.clone()
    case.wrapper.add_lora_linear(y, x, case.a, case.b, case.scale, case.slices)
    _check(case, y[:10])
    assert torch.equal(y[10:], before[10:])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("contiguous", [True, False])
def test_shrink_then_expand_matches_reference(seed, contiguous):
    """The separate ops (what vLLM's sharded layers call): shrink into fp32 buffers, then expand slice by slice."""
    case = Case(seed, contiguous=contiguous)
    buffers = torch.zeros(len(case.slices), len(case.token_ids), case.max_rank)
    case.wrapper.add_shrink(buffers, case.x, case.a, case.scale)
    assert not buffers[:, case.base_rows()].any(), "shrink wrote into a base token's buffer row"
    y = case.y.clone()
    case.wrapper.add_expand(y, buffers, case.b, case.slices, offset_start=0, add_inputs=True)
    _check(case, y)


def test_expand_slice_at_an_offset_leaves_the_rest_alone():
    case = Case(3, tokens=24)
    buffers = torch.zeros(len(case.slices), 24, case.max_rank)
    case.wrapper.add_shrink(buffers, case.x, case.a, case.scale)
    width = sum(case.slices)
    y = torch.randn(24, width + 10)
    before = y.clone()
    case.wrapper.add_expand(y, buffers, case.b, case.slices, offset_start=10)
    expected = case.reference() - case.y.double()  # the delta alone
    torch.testing.assert_close((y[:, 10:] - before[:, 10:]).double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(y[:, :10], before[:, :10])


@pytest.mark.parametrize("seed", range(4))
def test_embedding_and_logits_ops_match_reference(seed):
    case = Case(seed, tokens=20)
    rng = torch.Generator().manual_seed(seed)
    # Embedding: y += x @ B[s].T, x already holding each token's A row.
    b = case.b[0]
    x = torch.randn(20, case.max_rank, generator=rng)
    y = torch.randn(20, case.slices[0], generator=rng)
    out = y.clone()
    case.wrapper.add_lora_embedding(out, x, b)
    for t in range(20):
        s = case.slot(t)
        delta = x[t].double() @ b[s, 0].double().T if s >= 0 else 0
        torch.testing.assert_close(out[t].double(), y[t].double() + delta, atol=1e-5, rtol=1e-5)
    # Logits: one row per sampled request, indexed by the sampler (prompt) mapping.
    requests = [0, 11, 14, 0, 12]
    case.wrapper.update_metadata(_mapping(case.token_ids, requests, True), case.slot_to_id, SLOTS + 1, 1000)
    hidden = torch.randn(len(requests), case.d_in, generator=rng)
    logits = torch.randn(len(requests), case.slices[0], generator=rng)
    out = logits.clone()
    case.wrapper.add_lora_logits(out, hidden, case.a[0], case.b[0], 0.5)
    for i, lora_id in enumerate(requests):
        delta = 0
        if lora_id:
            s = case.slot_to_id.index(lora_id)
            delta = 0.5 * (hidden[i].double() @ case.a[0][s, 0].double().T) @ case.b[0][s, 0].double().T
        torch.testing.assert_close(out[i].double(), logits[i].double() + delta, atol=1e-5, rtol=1e-5)


def test_matches_vllms_own_cpu_wrapper_where_it_is_right():
    """With no base tokens in the batch vLLM's CPU kernels are correct: same numbers (a check of the layouts)."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    case = Case(5, tokens=30)
    ids = [case.slot_to_id[t % SLOTS] for t in range(30)]
    for wrapper in (case.wrapper, vllm := PunicaWrapperCPU(256, 256, "cpu")):
        wrapper.update_metadata(_mapping(ids, ids, True), case.slot_to_id, SLOTS + 1, 1000)
    ours, theirs = case.y.clone(), case.y.clone()
    case.wrapper.add_lora_linear(ours, case.x, case.a, case.b, case.scale, case.slices)
    vllm.add_lora_linear(theirs, case.x, case.a, case.b, case.scale, case.slices)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_padded_rank_costs_nothing():
    """A rank-16 adapter in a 32-wide slot: the fused weights hold 16 components per slice, not 32."""
    rng = torch.Generator().manual_seed(0)
    a = (_stacked(rng, 32, 64, [16] * SLOTS, 0, torch.bfloat16),) * 3
    b = tuple(_stacked(rng, n, 32, [16] * SLOTS, 1, torch.bfloat16) for n in (64, 32, 32))
    fused = fuse_slot(a, b, 2, (64, 32, 32))
    assert fused.a.shape == (3 * 16, 64) and fused.a.dtype == torch.float32
    assert [tuple(m.shape) for m in fused.b] == [(64, 16), (32, 16), (32, 16)]
    assert fused.y_offsets == (0, 64, 96)
    empty = tuple(torch.zeros(SLOTS, 1, 32, 64) for _ in range(3))
    assert fuse_slot(empty, b, 0, (64, 32, 32)) is None  # an empty slot adds nothing and is skipped


def test_new_weights_in_a_slot_are_picked_up():
    """Prepared fp32 copies follow a slot that gets another adapter (vLLM writes in place and moves the id)."""
    case = Case(7, tokens=16)
    y = case.y.clone()
    case.wrapper.add_lora_linear(y, case.x, case.a, case.b, case.scale, case.slices)
    for a, b in zip(case.a, case.b):  # what set_lora does: reset the slot, copy the new matrices in
        a[1].normal_()
        b[1].normal_()
    case.slot_to_id = [11, 21, 13, 14]
    case.token_ids = [21 if t == 12 else t for t in case.token_ids]
    case.wrapper.update_metadata(_mapping(case.token_ids, case.token_ids, True), case.slot_to_id, SLOTS + 1, 1000)
    y = case.y.clone()
    case.wrapper.add_lora_linear(y, case.x, case.a, case.b, case.scale, case.slices)
    _check(case, y)


def test_plan_groups_tokens_by_slot_and_leaves_base_tokens_out():
    plan = plan_tokens([-1, 2, 2, 2, -1, 0, 1, 0])
    assert plan.rows.tolist() == [1, 2, 3, 5, 7, 6]  # slot by slot; rows 0 and 4 (no adapter) are not selected
    assert plan.groups == ((2, 0, 3), (0, 3, 5), (1, 5, 6)) and plan.count == 6
    assert plan_tokens([-1, 3, 3, 3, -1]).rows == slice(1, 4)  # one run in order: a view, no gather
    assert plan_tokens([-1, -1]).count == 0


def test_plugin_switches_the_platform_wrapper(monkeypatch):
    from vllm.platforms import current_platform

    monkeypatch.setattr(type(current_platform), "get_punica_wrapper", type(current_platform).get_punica_wrapper)
    cpu_lora.register()
    cpu_lora.register()  # idempotent: vLLM may load plugins more than once
    monkeypatch.setenv(cpu_lora.ENV_SWITCH, "1")
    assert current_platform.get_punica_wrapper() == cpu_lora.WRAPPER_QUALNAME
    monkeypatch.setenv(cpu_lora.ENV_SWITCH, "0")
    assert current_platform.get_punica_wrapper() == cpu_lora.VLLM_CPU_WRAPPER_QUALNAME
    monkeypatch.delenv(cpu_lora.ENV_SWITCH)
    assert current_platform.get_punica_wrapper() == cpu_lora.VLLM_CPU_WRAPPER_QUALNAME


def test_plugin_is_an_installed_entry_point():
    """`pip install -e .` (make venv) registers it where vLLM looks; its own entry, apart from any other plugin."""
    entries = {e.name: e.value for e in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert entries.get("palate_cpu_lora") == "server.engines.cpu_lora:register"

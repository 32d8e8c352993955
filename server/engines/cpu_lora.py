"""Palate's CPU LoRA kernels for vLLM: tokens grouped by adapter, one fp32 matmul per adapter, base tokens untouched.

vLLM calls a "punica wrapper" from every LoRA-wrapped linear layer. For a token t whose request uses the adapter in
LoRA slot s(t) (s(t) = -1: no adapter, the base model) and a layer whose output is made of slices k = 1..K (q/k/v or
gate/up are packed side by side), vLLM keeps per slot

    A_k[s] in R^(R x d_in)      rows past the adapter's rank are zero (R = max_lora_rank)
    B_k[s] in R^(n_k x R)       columns past the adapter's rank are zero; LoRA's alpha/r is already folded in

and asks for

    shrink:        h_k[t] = scale * A_k[s(t)] x[t]                       (R numbers per token, kept in fp32)
    expand(-slice): y[t, o_k : o_k + n_k] += B_k[s(t)] h_k[t]            (o_k = offset of slice k in y)

and nothing at all for tokens with s(t) = -1. Grouping: with T_s = {t : s(t) = s} and X[T_s] the rows of those
tokens, the same numbers are

    H_k[T_s] = scale * X[T_s] A_k[s, :r_sk]^T               one (|T_s| x d_in) @ (d_in x r_sk) matmul
    Y[T_s, o_k : o_k + n_k] += H_k[T_s] B_k[s, :, :r_sk]^T   one (|T_s| x r_sk) @ (r_sk x n_k) matmul

where r_sk is the slot's effective rank (1 + the last j with A_k[s, j] and B_k[s, :, j] both non-zero; every later
term is exactly zero), so a rank-16 adapter in a 32-wide slot costs rank-16 work. For the fused `add_lora_linear` the
K shrinks share one matmul against [A_1[s, :r_s1]; ...; A_K[s, :r_sK]]. Matmuls run in fp32 on fp32 copies of the
slot's weights (made once per loaded adapter, not per step), and the result is added to y with one rounding to y's
dtype: on CPUs without bf16 hardware an fp32 matmul is also the fast one. Tokens are grouped once per engine step
(`update_metadata`), when the batch composition is known, and reused by every layer of that step.

vLLM 0.32's own CPU path instead gathers a copy of every token's slot matrices and runs an einsum in the model dtype,
and reads index -1 as the last slot, so a base request batched while every slot is occupied gets another adapter's
delta. Here index -1 is never read.

Installation: `register()` is a `vllm.general_plugins` entry point (vLLM runs those in every process it starts,
engine core included). On CPU it replaces the platform's `get_punica_wrapper()` so that it names
`PalatePunicaWrapper` when the environment variable `PALATE_FAST_CPU_LORA` is "1" (Palate's vLLM engine sets it
from `server.vllm.fast_cpu_lora`) and vLLM's own `PunicaWrapperCPU` otherwise. The variable is read when the
wrapper is made, inside the engine process, so the order in which plugins are loaded does not matter; unset, vLLM
runs unchanged (a vLLM server started from the same environment is not affected).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("palate.engine.cpu_lora")


def _make_visible() -> None:
    """An engine process vLLM spawns has no logging set up for Palate's loggers: give this one a stderr handler
    there, so the line saying which kernels run reaches the server log. Where the root logger has handlers (the
    server process, forked children) lines propagate to them instead."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False

ENV_SWITCH = "PALATE_FAST_CPU_LORA"
WRAPPER_QUALNAME = "server.engines.cpu_lora.PalatePunicaWrapper"
VLLM_CPU_WRAPPER_QUALNAME = "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"

Rows = slice | torch.Tensor  # a contiguous run of token rows, or the index tensor of scattered ones
SMALL_GROUP = 64  # up to this many tokens a group's slices expand in one block-diagonal matmul (fewer ops, wasted
                  # FLOPs negligible); above it, one matmul per slice (FLOPs dominate)


@dataclass(frozen=True)
class TokenPlan:
    """Where each adapter's tokens are, computed once per engine step. `rows` selects every token that has an
    adapter, ordered slot by slot (a slice when that is a contiguous run of rows, else an index tensor);
    `groups` holds (slot, start, stop): that slot's tokens are positions start:stop of the selection."""

    rows: Rows
    groups: tuple[tuple[int, int, int], ...]
    count: int

    def take(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.rows] if isinstance(self.rows, slice) else t.index_select(0, self.rows)

    def add_to(self, y: torch.Tensor, values: torch.Tensor) -> None:
        """y[rows] += values with one rounding to y's dtype; y may be a column slice (strided view) of the output."""
        if isinstance(self.rows, slice):
            y[self.rows].add_(values)
        else:
            y.index_add_(0, self.rows, values if values.dtype == y.dtype else values.to(y.dtype))

    def put_to(self, y: torch.Tensor, values: torch.Tensor) -> None:
        if isinstance(self.rows, slice):
            y[self.rows].copy_(values)
        else:
            y.index_copy_(0, self.rows, values if values.dtype == y.dtype else values.to(y.dtype))


NO_TOKENS = TokenPlan(slice(0, 0), (), 0)


def plan_tokens(slot_of_token: Sequence[int] | torch.Tensor) -> TokenPlan:
    """Group token positions by LoRA slot; slot -1 (no adapter) is left out, so its rows are never read or written."""
    slots = slot_of_token.tolist() if isinstance(slot_of_token, torch.Tensor) else list(slot_of_token)
    positions: dict[int, list[int]] = {}
    for position, slot in enumerate(slots):
        if slot >= 0:
            positions.setdefault(slot, []).append(position)
    if not positions:
        return NO_TOKENS
    order: list[int] = []
    groups = []
    for slot, rows in positions.items():
        groups.append((slot, len(order), len(order) + len(rows)))
        order.extend(rows)
    if order == list(range(order[0], order[0] + len(order))):  # already one run in order: views, no gather
        rows: Rows = slice(order[0], order[0] + len(order))
    else:
        rows = torch.tensor(order, dtype=torch.long)
    return TokenPlan(rows, tuple(groups), len(order))


def _slot(stacked: torch.Tensor, slot: int) -> torch.Tensor:
    """One slot's matrix from vLLM's (slots, 1, rows, cols) layout (or (slots, rows, cols))."""
    weight = stacked[slot]
    return weight[0] if weight.dim() == 3 else weight


def _last_nonzero(mask: torch.Tensor) -> int:
    nonzero = mask.nonzero()
    return int(nonzero[-1]) + 1 if nonzero.numel() else 0


def effective_rank(a: torch.Tensor, b: torch.Tensor) -> int:
    """1 + the last rank component j with A row j and B column j both non-zero (later components add exactly 0).
    `a` is (R, d_in), `b` is (n, R)."""
    return _last_nonzero((a != 0).any(dim=1) & (b != 0).any(dim=0))


def trimmed_a(a_stacked: torch.Tensor, slot: int) -> torch.Tensor:
    """fp32 (r, d_in): the slot's A without its trailing zero rows."""
    a = _slot(a_stacked, slot)
    return a[: _last_nonzero((a != 0).any(dim=1))].float().contiguous()


def trimmed_b(b_stacked: torch.Tensor, slot: int) -> torch.Tensor:
    """fp32 (n, r): the slot's B without its trailing zero columns."""
    b = _slot(b_stacked, slot)
    return b[:, : _last_nonzero((b != 0).any(dim=0))].float().contiguous()


# ---- the kernels (pure: weights in, output updated in place) -------------------------------------------------------
def shrink(out: torch.Tensor, x: torch.Tensor, a_by_slot: dict[int, torch.Tensor], plan: TokenPlan,
           scale: float) -> None:
    """out[t, :r_s] += scale * x[t] @ A[s].T for every planned token; `A[s]` is fp32 (r_s, d_in), `out` fp32."""
    if not plan.count:
        return
    xs = plan.take(x).float()
    h = torch.zeros(plan.count, out.shape[1])
    for slot, start, stop in plan.groups:
        a = a_by_slot.get(slot)
        if a is not None and a.shape[0]:
            h[start:stop, : a.shape[0]] = xs[start:stop] @ a.T
    if scale != 1.0:
        h.mul_(scale)
    plan.add_to(out, h)


def expand(out: torch.Tensor, h: torch.Tensor, b_by_slot: dict[int, torch.Tensor], plan: TokenPlan,
           offset: int, width: int, add: bool = True) -> None:
    """out[t, offset:offset+width] (+)= h[t, :r_s] @ B[s].T for every planned token; `B[s]` is fp32 (width, r_s).
    With add=False those rows are overwritten instead; rows of tokens without an adapter are never touched."""
    if not plan.count:
        return
    hs = plan.take(h).float()
    delta = torch.zeros(plan.count, width)
    for slot, start, stop in plan.groups:
        b = b_by_slot.get(slot)
        if b is not None and b.shape[1]:
            torch.mm(hs[start:stop, : b.shape[1]], b.T, out=delta[start:stop])
    target = out[:, offset: offset + width]
    (plan.add_to if add else plan.put_to)(target, delta)


@dataclass(frozen=True)
class FusedSlot:
    """One slot of one LoRA linear layer, ready for `lora_linear`, in fp32 with trailing zero rank components
    dropped: the slices' A matrices stacked (sum_k r_k, d_in); per slice its B (n_k, r_k), its columns in h and its
    offset in y; and all slices' B as one block-diagonal (sum_k n_k, sum_k r_k) matrix for small groups."""

    a: torch.Tensor
    b: tuple[torch.Tensor, ...]
    h_cols: tuple[tuple[int, int], ...]
    y_offsets: tuple[int, ...]
    b_block: torch.Tensor


def fuse_slot(a_stacked: Sequence[torch.Tensor], b_stacked: Sequence[torch.Tensor], slot: int,
              output_slices: Sequence[int]) -> FusedSlot | None:
    """fp32 copies of one slot's weights, trailing zero rank components dropped; None when the slot adds nothing."""
    a_parts, b_parts, cols, offsets = [], [], [], []
    column, offset = 0, 0
    for a_all, b_all, width in zip(a_stacked, b_stacked, output_slices):
        a, b = _slot(a_all, slot), _slot(b_all, slot)
        rank = effective_rank(a, b)
        if rank:
            a_parts.append(a[:rank].float())
            b_parts.append(b[:width, :rank].float().contiguous())
            cols.append((column, column + rank))
            offsets.append(offset)
            column += rank
        offset += width
    if not a_parts:
        return None
    block = torch.zeros(offset, column)
    for b, (start, stop), y_offset in zip(b_parts, cols, offsets):
        block[y_offset: y_offset + b.shape[0], start:stop] = b
    return FusedSlot(torch.cat(a_parts).contiguous(), tuple(b_parts), tuple(cols), tuple(offsets), block)


def lora_linear(y: torch.Tensor, x: torch.Tensor, fused: dict[int, FusedSlot | None], plan: TokenPlan,
                scale: float, width: int, offset_start: int = 0) -> None:
    """y[t, offset_start : offset_start + width] += scale * (x[t] @ A[s].T) @ B[s].T, all slices side by side, for
    every planned token: one gather, per adapter one shrink matmul and one (small groups) or K expand matmuls, one
    scatter-add rounding into y."""
    if not plan.count:
        return
    xs = plan.take(x).float()
    delta = torch.empty(plan.count, width)
    for slot, start, stop in plan.groups:
        weights = fused.get(slot)
        if weights is None:
            delta[start:stop].zero_()
            continue
        h = xs[start:stop] @ weights.a.T
        if scale != 1.0:
            h.mul_(scale)
        if stop - start <= SMALL_GROUP or len(weights.b) == 1:
            torch.mm(h, weights.b_block.T, out=delta[start:stop])
            continue
        rows = delta[start:stop]
        if sum(b.shape[0] for b in weights.b) != width:  # a slice without LoRA in this slot: no write covers it
            rows.zero_()
        for b, (c0, c1), offset in zip(weights.b, weights.h_cols, weights.y_offsets):
            torch.mm(h[:, c0:c1], b.T, out=rows[:, offset: offset + b.shape[0]])
    plan.add_to(y[:, offset_start: offset_start + width], delta)


# ---- the vLLM wrapper --------------------------------------------------------------------------------------------
def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter; the slot layout stamp still holds
        return None


def _vllm_cpu_wrapper_cls() -> type:
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    return PunicaWrapperCPU


class PalatePunicaWrapper(_vllm_cpu_wrapper_cls()):  # type: ignore[misc]
    """vLLM's CPU punica wrapper with Palate's grouped kernels for every LoRA op a linear model uses (shrink, expand,
    expand-slice, fused linear, embedding, logits). Metadata bookkeeping stays vLLM's (`update_metadata`); what vLLM
    adds later and this class does not override (full-linear LoRA) runs vLLM's code."""

    _announced = False

    def __init__(self, max_num_batched_tokens: int, max_batches: int, device: torch.device | str, **kwargs: Any):
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        self._plan = NO_TOKENS
        self._plan_rows = 0
        self._slot_ids: tuple[int | None, ...] = ()
        # (id of the layer's weight tuple or tensor, slot) -> (that object, stamp, prepared weights); holding the
        # object keeps its id from being reused by another one while the entry exists
        self._weights: dict[tuple[int, int], tuple[Any, tuple, Any]] = {}
        if not PalatePunicaWrapper._announced:
            PalatePunicaWrapper._announced = True
            log.info("Palate CPU LoRA kernels active (grouped fp32 matmuls; server.vllm.fast_cpu_lora: false "
                     "switches back to vLLM's own)")

    def update_metadata(self, mapping: Any, lora_index_to_id: list[int | None], max_loras: int, vocab_size: int,
                        **kwargs: Any) -> None:
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        indices = self.token_lora_indices
        self._plan_rows = int(indices.shape[0])
        self._plan = plan_tokens(indices)
        self._slot_ids = tuple(lora_index_to_id)

    # -- helpers --
    def _plan_for(self, rows: int) -> TokenPlan:
        if rows == self._plan_rows:
            return self._plan
        # A layer saw another row count than the step's mapping (padding): rows past the mapping get no adapter.
        slots = self.token_lora_indices[:rows].tolist()
        return plan_tokens(slots + [-1] * (rows - len(slots)))

    def _cached(self, key_obj: Any, slot: int, tensors: Sequence[torch.Tensor], build) -> Any:
        """Prepared weights of one slot of one layer, rebuilt when the slot holds another adapter (its LoRA id
        changed) or its tensors were written (version counters)."""
        key = (id(key_obj), slot)
        stamp = (self._slot_ids[slot] if slot < len(self._slot_ids) else None, *(_version(t) for t in tensors))
        hit = self._weights.get(key)
        if hit is not None and hit[0] is key_obj and hit[1] == stamp:
            return hit[2]
        value = build(slot)
        self._weights[key] = (key_obj, stamp, value)
        return value

    def _per_slot(self, key_obj: Any, tensors: Sequence[torch.Tensor], plan: TokenPlan, build) -> dict[int, Any]:
        return {slot: self._cached(key_obj, slot, tensors, build) for slot, _, _ in plan.groups}

    # -- the ops vLLM's layers call --
    def add_shrink(self, y: tuple[torch.Tensor, ...] | torch.Tensor, x: torch.Tensor,
                   lora_a_stacked: tuple[torch.Tensor, ...], scale: float, **kwargs: Any) -> None:
        """y[k][t] += scale * x[t] @ A_k[s(t)].T for each slice k (y: fp32 buffers, one per slice)."""
        x = x.view(-1, x.shape[-1])
        plan = self._plan_for(x.shape[0])
        for k, a_stacked in enumerate(lora_a_stacked):
            out = y[k]
            a_by_slot = self._per_slot(a_stacked, (a_stacked,), plan, lambda s, a=a_stacked: trimmed_a(a, s))
            shrink(out.view(-1, out.shape[-1]), x, a_by_slot, plan, scale)

    def add_expand(self, y: torch.Tensor, x: tuple[torch.Tensor, ...] | torch.Tensor,
                   lora_b_stacked: tuple[torch.Tensor, ...], output_slices: tuple[int, ...], offset_start: int = 0,
                   add_inputs: bool = True, **kwargs: Any) -> None:
        """y[t, offset:offset+n_k] += x[k][t] @ B_k[s(t)].T, slices side by side from offset_start."""
        out = y.view(-1, y.shape[-1])
        plan = self._plan_for(out.shape[0])
        offset = offset_start
        for k, (b_stacked, width) in enumerate(zip(lora_b_stacked, output_slices)):
            h = x[k]
            b_by_slot = self._per_slot(b_stacked, (b_stacked,), plan, lambda s, b=b_stacked: trimmed_b(b, s))
            expand(out, h.view(-1, h.shape[-1]), {s: b[:width] for s, b in b_by_slot.items()}, plan, offset, width,
                   add=add_inputs)
            offset += width

    def add_lora_linear(self, y: torch.Tensor, x: torch.Tensor, lora_a_stacked: tuple[torch.Tensor, ...],
                        lora_b_stacked: tuple[torch.Tensor, ...], scale: float, output_slices: tuple[int, ...], *,
                        buffer: tuple[torch.Tensor, ...] | None = None, **kwargs: Any) -> None:
        """y[t] += scale * x[t] @ A[s(t)].T @ B[s(t)].T, slice by slice. `buffer` is the intermediate vLLM's own
        kernels would use; the grouped kernel makes its own per step, so it is not needed."""
        out = y.view(-1, y.shape[-1])
        x = x.view(-1, x.shape[-1])
        plan = self._plan_for(x.shape[0])
        if not plan.count:
            return
        fused = self._per_slot(lora_a_stacked, (*lora_a_stacked, *lora_b_stacked), plan,
                               lambda s: fuse_slot(lora_a_stacked, lora_b_stacked, s, output_slices))
        lora_linear(out, x, fused, plan, scale, sum(output_slices), kwargs.get("offset_start", 0))

    def add_lora_embedding(self, y: torch.Tensor, x: torch.Tensor, lora_b_stacked: torch.Tensor,
                           add_inputs: bool = True, **kwargs: Any) -> None:
        """y[t] += x[t] @ B[s(t)].T (the embedding layer's expand; x already holds each token's A row)."""
        out = y.view(-1, y.shape[-1])
        plan = self._plan_for(out.shape[0])
        b_by_slot = self._per_slot(lora_b_stacked, (lora_b_stacked,), plan, lambda s: trimmed_b(lora_b_stacked, s))
        expand(out, x.view(-1, x.shape[-1]), b_by_slot, plan, 0, out.shape[1], add=add_inputs)

    def add_lora_logits(self, y: torch.Tensor, x: torch.Tensor, lora_a_stacked: torch.Tensor,
                        lora_b_stacked: torch.Tensor, scale, *, buffer: torch.Tensor | None = None,
                        **kwargs: Any) -> None:
        """logits[i] += scale * x[i] @ A[s(i)].T @ B[s(i)].T, one row per sampled position (sampler indices)."""
        out = y.view(-1, y.shape[-1])
        x = x.view(-1, x.shape[-1])
        plan = plan_tokens(self.sampler_indices[: x.shape[0]])
        a_by_slot = self._per_slot(lora_a_stacked, (lora_a_stacked,), plan, lambda s: trimmed_a(lora_a_stacked, s))
        b_by_slot = self._per_slot(lora_b_stacked, (lora_b_stacked,), plan, lambda s: trimmed_b(lora_b_stacked, s))
        h = torch.zeros(x.shape[0], lora_a_stacked.shape[-2])
        shrink(h, x, a_by_slot, plan, scale)
        expand(out, h, {s: b[: out.shape[1]] for s, b in b_by_slot.items()}, plan, 0, out.shape[1], add=True)


# ---- installation (the vllm.general_plugins entry point) --------------------------------------------------------
def enabled() -> bool:
    """Whether the engine process was asked for Palate's kernels (PALATE_FAST_CPU_LORA=1)."""
    return os.environ.get(ENV_SWITCH, "0").strip() == "1"


def _choose_wrapper(original):
    def get_punica_wrapper(cls) -> str:
        if enabled():
            log.info("LoRA: Palate's CPU kernels (%s)", WRAPPER_QUALNAME)
            return WRAPPER_QUALNAME
        log.info("LoRA: vLLM's own CPU kernels (%s=%s)", ENV_SWITCH, os.environ.get(ENV_SWITCH, "unset"))
        return original()

    get_punica_wrapper.__palate__ = True
    return classmethod(get_punica_wrapper)


def register() -> None:
    """vLLM general plugin: on CPU, let the platform name Palate's wrapper when PALATE_FAST_CPU_LORA=1. Safe to run
    more than once and in every vLLM process; on other platforms it does nothing."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    _make_visible()
    platform_cls = type(current_platform)
    if getattr(platform_cls.get_punica_wrapper, "__palate__", False):
        return
    platform_cls.get_punica_wrapper = _choose_wrapper(platform_cls.get_punica_wrapper)
    log.info("Palate CPU LoRA plugin installed in process %d (kernels %s)", os.getpid(),
             "on" if enabled() else f"off: {ENV_SWITCH} is not 1")

"""What Palate adds to vLLM's worker: one method, reached with `AsyncLLM.collective_rpc` (vLLM's
`worker_extension_cls`, which mixes this class into the worker class of every worker process).

`palate_clear_non_finite_kv()` sets every NaN and infinite entry of the KV cache to zero and returns how many it
changed. Why: a request whose activations turn non-finite writes NaN keys and values into its cache blocks, and vLLM
0.32's CPU attention reads stale positions of a reused block, so the NaN reaches the next requests whatever their
model, until the block is overwritten. Finite entries are left exactly as they are, so requests in flight are not
disturbed; vLLM runs utility calls between engine steps, never during one. The engine calls this after it fails a
request for non-finite logits (vllm_engine.py).
"""

from __future__ import annotations


class PalateWorkerExtension:
    def palate_clear_non_finite_kv(self) -> int:
        import torch

        changed = 0
        for cache in getattr(self.model_runner, "kv_caches", None) or []:
            if cache is None or not cache.is_floating_point():
                continue
            bad = int((~torch.isfinite(cache)).sum())
            if bad:
                torch.nan_to_num_(cache, nan=0.0, posinf=0.0, neginf=0.0)
                changed += bad
        return changed

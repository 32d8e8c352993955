"""A request whose logits turn non-finite fails alone, on the real vLLM engine (in-process, no server).

Preflight refuses adapters with NaN, infinite or out-of-range weights, so `palate serve` never loads one. This test
loads one straight into the engine, past preflight - as an adapter whose weights overflow at run time would arrive -
to check the net behind it: its generation and its scoring fail with `NonFiniteOutput` naming it, while `base`'s
greedy tokens and another adapter's, run in the same batch, are exactly what they are alone, before and after
(Palate's CPU LoRA kernels never touch a token of another adapter).
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

pytestmark = pytest.mark.engine

PROMPT = "Describe a 2-bed condo near the park with in-unit laundry."


def _nan_copy(source, target):
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True)
    shutil.copy2(source / "adapter_config.json", target / "adapter_config.json")
    tensors = load_file(str(source / "adapter_model.safetensors"))
    name = sorted(k for k in tensors if "mlp.down_proj.lora_B" in k)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(target / "adapter_model.safetensors"))
    return target


def _workers() -> set[int]:
    """Pids of the vLLM worker processes below this one."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True) if p.name() == "VLLM::Worker"}


def _thread_cores(workers: set[int]) -> set[int]:
    """The cores the threads of these vLLM worker processes may run on (from /proc, per thread)."""
    assert workers, "no vLLM worker process found"
    cores: set[int] = set()
    for pid in workers:
        for thread in os.listdir(f"/proc/{pid}/task"):
            status = open(f"/proc/{pid}/task/{thread}/status").read()
            listed = status.split("Cpus_allowed_list:")[1].split()[0]
            for part in listed.split(","):
                first, _, last = part.partition("-")
                cores.update(range(int(first), int(last or first) + 1))
    return cores


def test_non_finite_logits_fail_their_request_alone(base_model_dir, random_adapter, tmp_path):
    from core.config import VllmConfig
    from eval.engine import scoring_engine
    from server.engines.base import AdapterHandle, NonFiniteOutput, Sampling
    from server.serving import render_chat

    good = AdapterHandle("rand@1", 1, random_adapter.path)
    bad = AdapterHandle("poison@1", 2, _nan_copy(random_adapter.path, tmp_path / "poison"))

    async def scenario():
        # cpu_threads: 1 also checks, on the real engine, that the key binds vLLM's worker (see the end of the test)
        engine = scoring_engine(base_model_dir, VllmConfig(max_model_len=512, max_num_seqs=8, kv_cache_space_gib=1,
                                                           cpu_threads=1))
        others = _workers()  # other engines' workers (the session server's) are descendants of this process too
        await engine.start()
        worker_cores.update(_thread_cores(_workers() - others))
        text = render_chat(engine.tokenizer(), [{"role": "user", "content": PROMPT}])
        prompt = engine.tokenizer()(text, add_special_tokens=False)["input_ids"]

        async def greedy(handle, tag):
            tokens = []
            async for delta in engine.generate(prompt, Sampling(max_tokens=16, temperature=0.0), handle, tag):
                tokens += delta.token_ids
            return tokens

        try:
            for handle in (good, bad):
                await engine.load_adapter(handle)
            alone = {"base": await greedy(None, "b0"), "good": await greedy(good, "g0")}
            together = await asyncio.gather(greedy(None, "b1"), greedy(good, "g1"), greedy(bad, "p1"),
                                            engine.score(prompt, prompt[:4], bad), return_exceptions=True)
            after = {"base": await greedy(None, "b2"), "good": await greedy(good, "g2")}
            return alone, together, after
        finally:
            await engine.shutdown()

    worker_cores: set[int] = set()
    alone, (base, good_tokens, poisoned, scored), after = asyncio.run(scenario())
    # vllm.cpu_threads: 1 wins over the scoring engine's every-core binding: all worker threads on the last core
    assert worker_cores == {max(os.sched_getaffinity(0))}, worker_cores
    for failure in (poisoned, scored):
        assert isinstance(failure, NonFiniteOutput), failure
        assert "poison@1" in str(failure) and "non-finite" in str(failure)
    assert base == alone["base"] == after["base"]
    assert good_tokens == alone["good"] == after["good"]
    assert alone["good"] != alone["base"]  # the good adapter really changes the output


def test_the_hf_reference_engine_fails_non_finite_logits_too(base_model_dir, random_adapter, tmp_path):
    from server.engines.base import AdapterHandle, NonFiniteOutput, Sampling
    from server.engines.hf_engine import HfEngine

    bad = AdapterHandle("poison@1", 2, _nan_copy(random_adapter.path, tmp_path / "poison"))

    async def scenario():
        engine = HfEngine(base_model_dir, max_model_len=512, dtype="float32")
        await engine.start()
        await engine.load_adapter(bad)
        prompt = engine.tokenizer()(PROMPT, add_special_tokens=False)["input_ids"]
        failures = []
        try:
            async for _ in engine.generate(prompt, Sampling(max_tokens=4, temperature=0.0), bad, "p"):
                pass
        except NonFiniteOutput as exc:
            failures.append(exc)
        try:
            await engine.score(prompt, prompt[:3], bad)
        except NonFiniteOutput as exc:
            failures.append(exc)
        base = [d.token_ids async for d in engine.generate(prompt, Sampling(max_tokens=4, temperature=0.0), None, "b")]
        return failures, base

    failures, base = asyncio.run(scenario())
    assert len(failures) == 2 and all("poison@1" in str(f) for f in failures)
    assert any(base), "base still answers"

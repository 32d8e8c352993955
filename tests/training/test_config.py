"""Training config: TRL dataclasses filled from YAML + profile + overrides + flags; bad keys named."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from training.config import auto_bf16, default_config_path, load_recipe, recipe_unknown_keys, resolve_job


def test_profiles_and_precedence():
    quick = resolve_job("dpo")
    assert quick.palate.profile == "quick" and quick.trl.max_steps > 0
    assert load_recipe(default_config_path("dpo"), "quick")["bf16"] == "auto" and quick.trl.bf16 is auto_bf16()
    full = load_recipe(default_config_path("dpo"), "full")
    assert full["bf16"] is True and full["num_train_epochs"] >= 1 and "max_steps" not in full
    assert recipe_unknown_keys("dpo", default_config_path("dpo"), "full") == []
    assert quick.trl.beta == 10.0 and quick.palate.parent == "sft"  # the recipe's top-level DPO values
    assert list(quick.trl.loss_type) == ["sigmoid_norm", "sft"] and list(quick.trl.loss_weights) == [1.0, 2.0]
    # overrides beat the profile, flags beat overrides; `--from` is the parent
    spec = resolve_job("dpo", argv=["--beta", "0.4", "--from", "dpo", "--precompute_ref_log_probs", "true"],
                       overrides={"beta": 0.2, "max_steps": 2})
    assert (spec.trl.beta, spec.trl.max_steps, spec.palate.parent) == (0.4, 2, "dpo")
    assert spec.trl.precompute_ref_log_probs is True


def test_auto_bf16_picks_the_fast_precision_for_this_machine():
    assert auto_bf16(cuda=False, bf16_cpu=True, world_size=1) is True
    assert auto_bf16(cuda=False, bf16_cpu=False, world_size=1) is False  # AVX2 only: bf16 is emulated, slower
    assert auto_bf16(cuda=False, bf16_cpu=True, world_size=2) is False   # gloo has no bf16 collectives
    # from the YAML, from an override and from the flag (both spellings); on CPU bf16 also turns on use_cpu
    for kwargs in ({}, {"overrides": {"bf16": "auto"}}, {"argv": ["--bf16", "auto"]}, {"argv": ["--bf16=auto"]}):
        spec = resolve_job("sft", **kwargs)
        assert spec.trl.bf16 is auto_bf16()
        import torch
        if spec.trl.bf16 and not torch.cuda.is_available():
            assert spec.trl.use_cpu is True
    assert resolve_job("sft", argv=["--bf16", "false"]).trl.bf16 is False  # an explicit value is kept


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="learning_rat"):
        resolve_job("sft", overrides={"learning_rat": 1e-4})
    with pytest.raises(ConfigError, match="no profile 'huge'"):
        resolve_job("sft", profile="huge")


def test_lora_limits_the_server_needs():
    with pytest.raises(ConfigError, match="rank <= 32"):
        resolve_job("sft", overrides={"lora_r": 64})
    with pytest.raises(ConfigError, match="lora_target_modules"):
        resolve_job("sft", overrides={"lora_target_modules": ["embed_tokens"]})
    with pytest.raises(ConfigError, match="modules_to_save"):
        resolve_job("sft", overrides={"lora_modules_to_save": ["lm_head"]})


def test_quick_profile_stays_servable():
    for kind in ("sft", "dpo"):
        spec = resolve_job(kind)
        assert spec.model.lora_r <= 32 and not spec.model.lora_modules_to_save


def test_length_buckets_fix_the_order_and_refuse_a_second_sampler():
    spec = resolve_job("sft", overrides={"length_buckets": 4})
    assert spec.trl.train_sampling_strategy == "sequential"  # the Trainer keeps Palate's order
    for kind in ("sft", "dpo"):  # full trains epochs: a fresh shuffle each time, not one fixed order
        assert "length_buckets" not in load_recipe(default_config_path(kind), "full")
    with pytest.raises(ConfigError, match="train_sampling_strategy='group_by_length'"):
        resolve_job("sft", overrides={"length_buckets": 4, "train_sampling_strategy": "group_by_length"})
    with pytest.raises(ConfigError, match="length_buckets=0"):
        resolve_job("sft", overrides={"length_buckets": 0})


def test_length_bucketed_keeps_every_row_and_groups_similar_lengths():
    import random

    from training.inputs import length_bucketed, row_length

    rng = random.Random(1)
    rows = [{"prompt": "p" * rng.randint(5, 50), "completion": "c" * rng.randint(1, 300), "id": i} for i in range(203)]
    out = length_bucketed(rows, batch_size=4, batches_per_bucket=8, seed=0)
    assert sorted(r["id"] for r in out) == list(range(203))  # each row once
    assert out == length_bucketed(rows, batch_size=4, batches_per_bucket=8, seed=0)  # seeded
    assert out != length_bucketed(rows, batch_size=4, batches_per_bucket=8, seed=1)

    def padded_share(order):  # computed tokens that are padding, batches of 4
        batches = [order[i:i + 4] for i in range(0, len(order), 4)]
        real = sum(row_length(r) for r in order)
        return 1 - real / sum(max(row_length(r) for r in b) * len(b) for b in batches)

    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)
    assert padded_share(out) < padded_share(shuffled) / 2
    # the first bucket's rows are a random draw, not the shortest or longest of the file
    first = sorted(row_length(r) for r in out[:32])
    everything = sorted(row_length(r) for r in rows)
    assert first[0] < everything[len(rows) // 2] < first[-1]

"""Training config: TRL dataclasses filled from YAML + profile + overrides + flags; bad keys named."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from training.config import default_config_path, load_recipe, recipe_unknown_keys, resolve_job


def test_profiles_and_precedence():
    quick = resolve_job("dpo")
    assert quick.palate.profile == "quick" and quick.trl.max_steps > 0 and not quick.trl.bf16
    full = load_recipe(default_config_path("dpo"), "full")
    assert full["bf16"] is True and full["num_train_epochs"] >= 1 and "max_steps" not in full
    assert recipe_unknown_keys("dpo", default_config_path("dpo"), "full") == []
    assert quick.trl.beta == 0.3 and quick.palate.parent == "sft"  # the recipe's top-level DPO values
    assert list(quick.trl.loss_type) == ["sigmoid", "sft"] and list(quick.trl.loss_weights) == [1.0, 1.0]
    # overrides beat the profile, flags beat overrides; `--from` is the parent
    spec = resolve_job("dpo", argv=["--beta", "0.4", "--from", "dpo", "--precompute_ref_log_probs", "true"],
                       overrides={"beta": 0.2, "max_steps": 2})
    assert (spec.trl.beta, spec.trl.max_steps, spec.palate.parent) == (0.4, 2, "dpo")
    assert spec.trl.precompute_ref_log_probs is True


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

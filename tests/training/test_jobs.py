"""SFT and DPO jobs on a tiny 2-layer model: adapters move, the base does not, DPO's reference is the SFT adapter."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from training.config import resolve_job
from training.data import sha256_path


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _short_trainer(kind, tiny_model_dir, data_path, tmp_path, overrides, parent=None):
    """The job's own model loading and trainer construction, with 2 steps, for white-box checks."""
    from training.inputs import prepare_data
    from training.jobs import load_model, make_trainer

    spec = resolve_job(kind, overrides={**overrides, "max_steps": 2, "output_dir": str(tmp_path / "out")})
    spec.trl.output_dir = str(tmp_path / "out")
    model, tokenizer = load_model(spec, tiny_model_dir, parent)
    return make_trainer(spec, model, tokenizer, prepare_data(kind, data_path), None, [])


def test_sft_trains_the_adapter_and_leaves_the_base_alone(tiny_model_dir, small_dataset, tmp_path, tiny_overrides):
    trainer = _short_trainer("sft", tiny_model_dir, small_dataset["sft_train"], tmp_path, tiny_overrides)
    before = _snapshot(trainer.model)
    trainer.train()
    after = _snapshot(trainer.model)
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert all(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)  # B starts at zero, must move
    assert all(torch.equal(before[n], after[n]) for n in base)


def test_dpo_reference_is_a_frozen_copy_of_the_sft_adapter(trained, tiny_model_dir, small_dataset, tmp_path,
                                                          tiny_overrides):
    _, sft, _ = trained
    trainer = _short_trainer("dpo", tiny_model_dir, small_dataset["prefs_train"], tmp_path, tiny_overrides, parent=sft)
    model = trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    sft_weights = load_file(str(sft.path / "adapter_model.safetensors"))
    params = dict(model.named_parameters())

    def ref_name(key):  # saved key -> live "ref" parameter name
        return key.replace(".lora_A.weight", ".lora_A.ref.weight").replace(".lora_B.weight", ".lora_B.ref.weight")

    assert all(torch.equal(params[ref_name(k)], v.to(params[ref_name(k)].dtype)) for k, v in sft_weights.items())
    before = _snapshot(model)
    trainer.train()
    after = _snapshot(model)
    ref = [n for n in before if ".ref." in n]
    trained_lora = [n for n in before if ".default." in n and "lora_" in n]
    assert ref and all(torch.equal(before[n], after[n]) for n in ref)  # reference frozen
    assert any(not torch.equal(before[n], after[n]) for n in trained_lora)  # policy moved
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)  # base untouched


def test_dpo_starts_at_zero_reward_because_policy_equals_reference(trained):
    # Before the first update the policy IS the SFT adapter; rewards are log-ratios against the reference, so they
    # are exactly 0 only if the reference is the SFT adapter (against the bare base they would not be).
    _, _, dpo = trained
    history = json.loads((dpo.path / "metrics.json").read_text())
    first = next(e for e in history if "rewards/chosen" in e)
    assert first["step"] == 1
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0


def test_registered_records(trained, small_dataset, tiny_model_dir, tiny_overrides):
    _, sft, dpo = trained
    manifest = json.loads((tiny_model_dir / "palate_model.json").read_text())
    assert (sft.ref, sft.kind, sft.parent) == ("sft@1", "sft", None)
    assert (dpo.ref, dpo.kind, dpo.parent) == ("dpo@1", "dpo", "sft@1")
    assert dpo.meta["dataset_sha256"] == sha256_path(small_dataset["prefs_train"])
    assert sft.meta["dataset_sha256"] == sha256_path(small_dataset["sft_train"])
    for adapter in (sft, dpo):
        meta = adapter.meta
        assert meta["base_model"] == {"id": manifest["id"], "weights_sha256": manifest["weights_sha256"]}
        assert meta["lora"] == {"r": tiny_overrides["lora_r"], "alpha": tiny_overrides["lora_alpha"],
                                "target_modules": sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])}
        assert meta["config"]["trl"]["max_steps"] == 3
        assert meta["content_sha256"] and meta["created"]
        assert (adapter.path / "metrics.png").stat().st_size > 1000
        config = adapter.adapter_config()
        assert not config.get("modules_to_save")
    assert "eval_rewards/accuracies" in dpo.meta["metrics"]["eval"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(
        dpo.meta["metrics"]["train"])
    assert "eval_loss" in sft.meta["metrics"]["eval"]
    # only the trained adapter is kept, never TRL's frozen "ref" copy; and the quick profile's on-policy answers
    assert sorted(p.name for p in dpo.path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "metrics.json", "metrics.png", "on_policy.jsonl",
        "palate.json"]
    assert dpo.meta["on_policy"]["rows"] == 3 * 2  # the rows its 3 steps of 2 train, not the profile's 72
    assert sorted(p.name for p in sft.path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "metrics.json", "metrics.png", "palate.json"]


def test_dpo_continues_from_its_parent(trained):
    _, sft, dpo = trained
    sft_w = load_file(str(sft.path / "adapter_model.safetensors"))
    dpo_w = load_file(str(dpo.path / "adapter_model.safetensors"))
    assert sft_w.keys() == dpo_w.keys()
    assert any(not torch.equal(sft_w[k], dpo_w[k]) for k in sft_w)


def test_length_buckets_reach_the_trainer_and_cut_padding(tiny_model_dir, small_dataset, tmp_path, tiny_overrides):
    """The real TRL dataloader of a DPO job: with length_buckets its batches carry less padding than without."""
    from training.jobs import _resolve_inputs, load_model, make_trainer

    def padding(buckets):
        overrides = {**tiny_overrides, "per_device_train_batch_size": 4, "output_dir": str(tmp_path / "out"),
                     "data": str(small_dataset["prefs_train"]),
                     "eval_data": None, "length_buckets": buckets}
        spec = resolve_job("dpo", overrides=overrides)
        train, _ = _resolve_inputs(spec, log=lambda *_: None)
        model, tokenizer = load_model(spec, tiny_model_dir, None)
        trainer = make_trainer(spec, model, tokenizer, train, None, [])
        masks = [batch["attention_mask"] for _, batch in zip(range(12), trainer.get_train_dataloader())]
        return sum(float((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)

    assert padding(8) < 0.75 * padding(None)  # measured 0.14 vs 0.24 of the padded tokens


def test_each_job_leaves_its_progress_record(trained):
    """The file the server's /v1/arena/training reads: the last step, the loss and the registered version."""
    from core.training_progress import read_progress

    root, sft, dpo = trained
    jobs = {job["name"]: job for job in read_progress(root)}
    for adapter in (sft, dpo):
        job = jobs[adapter.name]
        assert job["state"] == "registered" and job["ref"] == adapter.ref and job["kind"] == adapter.kind
        assert job["step"] == job["max_steps"] == adapter.meta["timing"]["global_step"]
        assert isinstance(job["loss"], float)

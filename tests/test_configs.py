"""Every YAML file under configs/ loads, names the command that uses it, and validates against its schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import CONFIG_DIR, load_config, load_model_config, read_yaml

ALL_YAML = sorted(CONFIG_DIR.rglob("*.yaml")) + sorted(CONFIG_DIR.rglob("*.yml"))


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


def test_there_are_configs():
    assert any(p.parent.name == "train" for p in ALL_YAML) and (CONFIG_DIR / "model.yaml") in ALL_YAML


@pytest.mark.parametrize("path", ALL_YAML, ids=_id)
def test_config_names_its_command_and_validates(path: Path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("palate " in first or "accelerate launch" in first or "make " in first), (
        f"{path}: the first line must be a comment naming the command that uses the file, got {first!r}")
    data = read_yaml(path)  # valid YAML mapping
    relative = path.relative_to(CONFIG_DIR)
    if relative.parts[0] == "train":
        from training.config import load_recipe, recipe_unknown_keys, resolve_job

        kind = path.stem
        assert kind in ("sft", "dpo"), f"{path}: train configs are named after their job (sft.yaml, dpo.yaml)"
        for profile in data.get("profiles", {}):
            assert recipe_unknown_keys(kind, path, profile) == [], f"{path} profile {profile}"
            if not load_recipe(path, profile).get("bf16"):
                # CPU profiles are fully built (TRL dataclass validation included); bf16 ones need a GPU for that.
                resolve_job(kind, config=path, profile=profile)
    elif relative.parts[0] == "accelerate":
        from accelerate.commands.config.config_args import ClusterConfig

        config = ClusterConfig.from_yaml_file(str(path))
        assert str(config.distributed_type) in {"DistributedType.FSDP", "DistributedType.DEEPSPEED", "FSDP", "DEEPSPEED"}
        assert config.num_processes >= 2
    elif relative == Path("model.yaml"):
        load_model_config(path)
    elif relative == Path("server.yaml"):
        load_config(path)
    elif relative == Path("arena.yaml"):
        from core.arena_config import load_arena_config

        load_arena_config(path)
    else:
        pytest.skip(f"{relative}: no schema known to this test (add a branch when a new config kind appears)")


def test_auto_dtype_is_float32_on_a_cpu_without_bf16_instructions():
    from core.config import cpu_has_bf16_instructions, engine_dtype

    avx2 = "flags : fpu sse2 avx avx2 fma"
    assert not cpu_has_bf16_instructions(avx2)
    assert cpu_has_bf16_instructions(avx2 + " avx512f avx512_bf16") and cpu_has_bf16_instructions(avx2 + " amx_bf16")
    assert engine_dtype("auto", on_gpu=True) == "bfloat16"
    assert engine_dtype("float16", on_gpu=False) == "float16"
    assert engine_dtype("auto", on_gpu=False) == ("bfloat16" if cpu_has_bf16_instructions() else "float32")

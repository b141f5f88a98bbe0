"""Training config (training/config.py): presets, overrides, validation, LR schedule, prompt files."""

from __future__ import annotations

import dataclasses
import math

import pytest

from comfy_aig.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    describe_fields,
    load_config,
    parse_override,
)
from comfy_aig.training.inputs import read_prompts
from comfy_aig.training.trainer import hash_seed, lr_lambda


def test_presets_load_and_round_trip():
    sd15, sdxl = load_config("sd15"), load_config("sdxl")
    assert (sd15.model.kind, sd15.model.resolution, sd15.draft.k, sd15.lora.rank) == ("sd15", 512, 1, 32)
    assert (sdxl.model.kind, sdxl.model.resolution) == ("sdxl", 1024)
    assert sd15.lora.targets == ["to_q", "to_k", "to_v", "to_out.0"]
    assert config_from_dict(config_to_dict(sdxl)) == sdxl


def test_overrides_are_toml_values():
    config = load_config("sd15", ["optim.lr=5e-5", "draft.random_k=true", "draft.k=3", "model.path=/x/y.safetensors",
                                  'reward.terms=[{source="builtin:redness", weight=2}]', "optim.max_grad_norm=2"])
    assert config.optim.lr == 5e-5 and config.draft.random_k is True and config.draft.k == 3
    assert config.model.path == "/x/y.safetensors"  # not valid TOML: kept as the raw string
    assert config.reward.terms == [{"source": "builtin:redness", "weight": 2}]
    assert config.optim.max_grad_norm == 2.0 and isinstance(config.optim.max_grad_norm, float)
    assert parse_override("train.seed=7") == ("train", "seed", 7)


@pytest.mark.parametrize("overrides, message", [
    (["optim.lrx=1"], r"unknown key\(s\) \['lrx'\] in \[optim\]; valid keys: lr, weight_decay"),
    (["optimiser.lr=1"], r"unknown config section\(s\) \['optimiser'\]; valid sections: model, lora"),
    (["draft.k=0"], r"draft.k = 0; use 1..draft.steps"),
    (["draft.steps=true"], r"draft.steps must be int, got bool"),
    (["optim.schedule=linear"], r"valid choices: constant, cosine"),
    (["model.resolution=500"], r"multiple of 8"),
    (['reward.terms=[{path="x"}]'], r"unknown keys \['path'\]; valid: source, weight, kind"),
    (["lr=1"], r"use section.key=value"),
])
def test_bad_values_name_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("sd15", overrides)


def test_every_field_is_documented():
    text = describe_fields()
    for section in dataclasses.fields(TrainConfig):
        for f in dataclasses.fields(section.default_factory):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help"
            assert f"  {f.name} = " in text


def test_missing_preset_lists_presets():
    with pytest.raises(FileNotFoundError, match="presets: sd15, sdxl"):
        load_config("nope")


def test_lr_schedule_warmup_then_cosine():
    config = load_config("sd15", ["optim.warmup_steps=4", "optim.schedule=cosine", "train.max_steps=14"])
    f = lr_lambda(config)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and math.isclose(f(9), 0.5) and f(14) == pytest.approx(0.0)
    constant = lr_lambda(load_config("sd15", ["optim.warmup_steps=0"]))
    assert constant(0) == constant(1000) == 1.0


def test_read_prompts_and_seed_hash(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# header\n a cat \n\nthe dog\n")
    assert read_prompts(path) == ["a cat", "the dog"]
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.txt")
    assert hash_seed(0, 1, 2) == hash_seed(0, 1, 2) != hash_seed(0, 2, 1)


def test_cuda_without_a_gpu_names_the_setting_it_came_from(monkeypatch):
    """One device resolver for train, sample and evaluate; its error names the setting the user wrote."""
    import torch

    from comfy_aig.training.config import ConfigError
    from comfy_aig.training.inputs import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", "model.device", ConfigError) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^train\.device = 'cuda' but no CUDA device .* use 'auto' or 'cpu'"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"^model\.device = 'cuda'"):
        resolve_device("cuda", "model.device", ConfigError)
    with pytest.raises(ValueError, match=r"^--device = 'cuda'"):
        resolve_device("cuda", "--device")

"""kohya LoRA export (training/lora_export.py): round trip, metadata, and ComfyUI's own loader."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open

from aig_testkit.diffusers_fixtures import TINY_PIXEL_UNET
from aig_testkit.sd_fixtures import lora_target_modules
from comfy_aig.training.lora_export import (
    export_kohya,
    kohya_deltas,
    kohya_name,
    load_kohya_into_unet,
    peft_deltas,
    read_kohya,
)

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _adapted_unet(config, rank=4, alpha=8.0, seed=0, targets=TARGETS, use_rslora=False):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, use_rslora=use_rslora))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return unet


def _n_targets(config) -> int:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return len(lora_target_modules(UNet2DConditionModel(**config)))


@pytest.mark.parametrize("use_rslora", [False, True])
def test_round_trip_equals_peft_deltas(tmp_path, use_rslora):
    unet = _adapted_unet(TINY_PIXEL_UNET, use_rslora=use_rslora)
    path = export_kohya(unet, tmp_path / "lora.safetensors", config={"lr": 1e-4})
    expected = {kohya_name(k): v for k, v in peft_deltas(unet).items()}
    got = kohya_deltas(path)
    assert set(got) == set(expected) and len(got) == _n_targets(TINY_PIXEL_UNET)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-12)
    modules, meta = read_kohya(path)
    scale = 8.0 / (4**0.5 if use_rslora else 4)
    assert all(abs(m.scale - scale) < 1e-9 for m in modules.values())
    assert meta["ss_network_dim"] == "4" and json.loads(meta["ss_training_config"]) == {"lr": 1e-4}
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    with safe_open(str(path), framework="pt") as f:
        assert all(k.startswith("lora_unet_") for k in f.keys())
        assert not any("lora_A" in k or "lora_B" in k for k in f.keys())
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_load_into_fresh_unet_reproduces_outputs(tmp_path):
    from diffusers import UNet2DConditionModel

    trained = _adapted_unet(TINY_PIXEL_UNET, rank=2, alpha=3.0)
    path = export_kohya(trained, tmp_path / "lora.safetensors")
    torch.manual_seed(0)
    fresh = UNet2DConditionModel(**TINY_PIXEL_UNET)
    assert load_kohya_into_unet(fresh, path) == _n_targets(TINY_PIXEL_UNET)
    x, t, ctx = torch.randn(1, 3, 8, 8), torch.tensor([10]), torch.randn(1, 4, 8)
    torch.testing.assert_close(fresh(x, t, ctx).sample, trained(x, t, ctx).sample, rtol=1e-5, atol=1e-6)


def test_load_rejects_foreign_modules(tmp_path):
    from diffusers import UNet2DConditionModel

    path = export_kohya(_adapted_unet(TINY_PIXEL_UNET), tmp_path / "lora.safetensors")
    other = dict(TINY_PIXEL_UNET, down_block_types=("DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(ValueError, match="verify-lora"):
        load_kohya_into_unet(UNet2DConditionModel(**other), path)


@pytest.mark.comfyui
@pytest.mark.slow
def test_comfyui_loads_every_key_with_peft_deltas(comfy_inprocess, sd15_checkpoint, tmp_path, caplog):
    """ComfyUI's own loader (comfy.lora.load_lora) maps every exported key; patched deltas equal peft's."""
    import comfy.lora
    import comfy.sd
    import comfy.utils

    from aig_testkit.sd_fixtures import SHALLOW_SD15_UNET

    unet = _adapted_unet(SHALLOW_SD15_UNET, rank=4, alpha=2.0)
    path = export_kohya(unet, tmp_path / "sd15_lora.safetensors")
    model = comfy.sd.load_checkpoint_guess_config(str(sd15_checkpoint), output_vae=False, output_clip=False)[0]
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    lora = comfy.utils.load_torch_file(str(path))
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, key_map)
    assert "not loaded" not in caplog.text
    expected = peft_deltas(unet)
    assert len(patches) == len(expected) == _n_targets(SHALLOW_SD15_UNET) > 0
    original = {k: v.float().clone() for k, v in model.model.state_dict().items()}
    patched = model.clone()
    assert set(patched.add_patches(patches, 1.0)) == set(patches)
    patched.patch_model()
    try:
        state = patched.model.state_dict()
        for module_path, delta in expected.items():
            key = key_map[kohya_name(module_path)]
            got = state[key].float() - original[key]
            torch.testing.assert_close(got.double(), delta.reshape(got.shape), rtol=0, atol=1e-6)
    finally:
        patched.unpatch_model()

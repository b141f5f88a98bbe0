"""Offline SD1.x / SDXL loading (training/models.py) on tiny models in real file layouts."""

from __future__ import annotations

import json

import pytest
import torch

from aig_testkit.diffusers_fixtures import build_tiny_sd15, build_tiny_sdxl, build_tiny_sdxl_single_file
from comfy_aig.training.models import (
    add_lora,
    build_diffusion_model,
    detect_kind,
    load_pipeline,
    shipped_config_dir,
)
from comfy_aig.training.sampling import sample


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory):
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny_sd15"))


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


def test_single_file_matches_diffusers_dir(tiny_sd15):
    directory, single = tiny_sd15
    assert detect_kind(directory) == detect_kind(single) == "sd15"
    from_dir = load_pipeline(directory)
    from_file = load_pipeline(single, config_dir=directory)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(from_dir, name).state_dict(), getattr(from_file, name).state_dict()
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs"
    ma, mb = build_diffusion_model(from_dir), build_diffusion_model(from_file)
    ca, cb = ma.encode_prompts(["a red circle"]), mb.encode_prompts(["a red circle"])
    assert torch.equal(ca.embeds, cb.embeds) and ca.embeds.shape == (1, 77, 32)
    noise = torch.randn(1, *ma.latent_shape, generator=torch.Generator().manual_seed(0))
    ia = sample(ma, ["a red circle"], steps=2, guidance_scale=2.0, noise=noise).images
    ib = sample(mb, ["a red circle"], steps=2, guidance_scale=2.0, noise=noise).images
    assert torch.equal(ia, ib) and ia.shape == (1, 3, 16, 16)


def test_sdxl_conditioning_and_lora_sampling(tiny_sdxl):
    assert detect_kind(tiny_sdxl) == "sdxl"
    model = build_diffusion_model(load_pipeline(tiny_sdxl), resolution=16)
    cond = model.encode_prompts(["a cat", "a dog"])
    assert cond.embeds.shape == (2, 77, 80) and cond.pooled.shape == (2, 48)
    assert cond.time_ids.tolist() == [[16, 16, 0, 0, 16, 16]] * 2
    params = add_lora(model.unet, rank=2, alpha=2.0)
    assert params and all(p.requires_grad for p in params)
    out = sample(model, ["a cat", "a dog"], steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()


@pytest.mark.slow
def test_sdxl_single_file_matches_diffusers_dir(tiny_sdxl, tmp_path):
    single = build_tiny_sdxl_single_file(tmp_path, tiny_sdxl)
    assert detect_kind(single) == "sdxl"
    from_dir, from_file = load_pipeline(tiny_sdxl), load_pipeline(single, config_dir=tiny_sdxl)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(from_dir, name).state_dict(), getattr(from_file, name).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name
    ca = build_diffusion_model(from_dir, 16).encode_prompts(["a cat"])
    cb = build_diffusion_model(from_file, 16).encode_prompts(["a cat"])
    assert torch.equal(ca.embeds, cb.embeds) and torch.equal(ca.pooled, cb.pooled)


def test_shipped_sdxl_tokenizers_pad_like_the_original():
    from comfy_aig.training.models import _tokenizers

    toks = _tokenizers("sdxl", shipped_config_dir("sdxl"))
    assert toks["tokenizer"].pad_token == "<|endoftext|>" and toks["tokenizer"].pad_token_id == 49407
    assert toks["tokenizer_2"].pad_token == "!" and toks["tokenizer_2"].pad_token_id == 0
    ids = toks["tokenizer_2"](["a cat"], padding="max_length", max_length=77).input_ids[0]
    assert ids[:4] == [49406, 320, 2368, 49407] and ids[4:] == [0] * 73


def test_shipped_configs_are_the_real_architectures():
    from diffusers import UNet2DConditionModel

    expected = {"sd15": 859_520_964, "sdxl": 2_567_463_684}  # published UNet parameter counts
    for kind, count in expected.items():
        config = json.loads((shipped_config_dir(kind) / "unet" / "config.json").read_text())
        with torch.device("meta"):
            unet = UNet2DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
        assert sum(p.numel() for p in unet.parameters()) == count


def test_detect_kind_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        detect_kind(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        detect_kind(tmp_path)
    (tmp_path / "x.ckpt").write_bytes(b"0")
    with pytest.raises(ValueError, match="safetensors"):
        detect_kind(tmp_path / "x.ckpt")

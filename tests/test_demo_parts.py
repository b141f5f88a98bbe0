"""Unit tests of the demo's parts: world, toy text encoder, base-model files, reward, LoRA file round trip."""

from __future__ import annotations

import pytest
import torch

from aig_testkit.demo_fixtures import TINY
from comfy_aig.training.demo import world
from comfy_aig.training.demo.model import DemoBaseModel, ToyTextEncoder
from comfy_aig.training.demo.reward import YellownessReward, normalise_features


def test_world_is_seeded_in_range_and_multimodal():
    a, pa = world.training_batch(64, torch.Generator().manual_seed(3))
    b, pb = world.training_batch(64, torch.Generator().manual_seed(3))
    assert a.shape == (64, 3, 32, 32) and torch.equal(a, b) and pa == pb
    assert a.min() >= 0 and a.max() <= 1
    scenes = world.sample_scenes(600, torch.Generator().manual_seed(0))
    assert set(scenes.shape.tolist()) == {0, 1, 2} and set(scenes.colour.tolist()) == set(range(6))
    forms = {("empty" if p == "" else "shape" if p.startswith("a ") and p.endswith(world.SHAPES) else
              "colour" if p.endswith("shape") else "full") for p in pa + pb}
    assert forms == {"empty", "shape", "colour", "full"}


def test_render_puts_the_colour_at_the_centre_and_grey_at_the_corner():
    scenes = world.Scenes(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 4]), torch.full((3,), 8.0),
                          torch.full((3, 2), 16.0), torch.full((3,), 0.5))
    images = world.render(scenes)
    palette = torch.tensor(list(world.COLOURS.values()))
    for i, colour in enumerate([0, 1, 4]):
        assert torch.allclose(images[i, :, 16, 16], palette[colour], atol=0.02)
        assert torch.allclose(images[i, :, 0, 0], torch.full((3,), 0.5), atol=0.02)


def test_tokenizer_maps_words_and_rejects_unknown_ones():
    ids = ToyTextEncoder.tokenize(["red circle", "", "a blue shape"])
    assert ids.shape == (3, 4) and (ids[:, 0] == ids[0, 0]).all()
    assert ids[1, 1:].eq(ids[1, 1]).all()  # all padding
    with pytest.raises(ValueError, match="unknown words"):
        ToyTextEncoder.tokenize(["purple circle"])
    with pytest.raises(ValueError, match="more than"):
        ToyTextEncoder.tokenize(["a red circle shape"])


def test_base_model_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DemoBaseModel(TINY).eval()
    path = tmp_path / "m.safetensors"
    model.save(path, metadata={"steps_done": 1})
    assert (tmp_path / "m.json").is_file()
    loaded = DemoBaseModel.load(path)
    x, t = torch.randn(2, 12, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        ref = model.unet(x, t, encoder_hidden_states=model.text(["a circle", ""])).sample
        out = loaded.unet(x, t, encoder_hidden_states=loaded.text(["a circle", ""])).sample
    assert torch.equal(ref, out)
    with pytest.raises(FileNotFoundError, match="train_base"):
        DemoBaseModel.load(tmp_path / "missing.safetensors")


def test_space_to_depth_latents_round_trip_exactly():
    model = DemoBaseModel(TINY)
    images = torch.rand(2, 3, 32, 32)
    latents = model.encode_images(images)
    assert latents.shape == (2, *model.latent_shape) == (2, 12, 16, 16)
    assert torch.allclose(model.decode_latents(latents), images, atol=1e-6)


def test_yellowness_reward_values_gradient_and_features():
    reward = YellownessReward()
    yellow = torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    grey = torch.full((1, 3, 16, 16), 0.4)
    blue = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    images = torch.cat([yellow, grey, blue]).clone().requires_grad_(True)
    scores = reward.score(images, None)
    assert torch.allclose(scores, torch.tensor([1.0, 0.0, -1.0]))
    scores.sum().backward()
    assert images.grad.abs().sum() > 0
    assert reward.image_features(images.detach()).shape == (3, 192)


def test_normalise_features_uses_one_global_scale():
    ref = torch.randn(50, 6) * torch.tensor([1.0, 1, 1, 1, 1, 10])
    other = ref * 2 + 3
    n_ref, n_other = normalise_features(ref, other)
    assert torch.allclose(n_ref.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(n_ref.pow(2).mean(), torch.tensor(1.0), atol=1e-5)
    ratio = n_ref.std(0) / ref.std(0)  # same factor for every dimension (no per-dim standardisation)
    assert torch.allclose(ratio, ratio[0].expand(6), rtol=1e-4)
    assert torch.allclose(n_other, (other - ref.mean(0)) * ratio[0], atol=1e-4)


def test_exported_lora_reloads_to_the_same_tuned_samples(tmp_path):
    from comfy_aig.training.demo.pipeline import LORA_TARGETS, diffusion_model
    from comfy_aig.training.lora_export import export_kohya
    from comfy_aig.training.models import add_lora
    from comfy_aig.training.sampling import sample

    torch.manual_seed(0)
    base = DemoBaseModel(TINY)
    model = diffusion_model(base)
    add_lora(model.unet, 2, 2.0, tuple(LORA_TARGETS), seed=0)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    noise = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    prompts = ["a circle", "a square"]
    tuned = sample(model, prompts, steps=3, guidance_scale=2.0, noise=noise).images
    path = export_kohya(model.unet, tmp_path / "lora.safetensors", base_model="comfy_aig_demo")
    reloaded = diffusion_model(base, path)
    again = sample(reloaded, prompts, steps=3, guidance_scale=2.0, noise=noise).images
    assert torch.allclose(tuned, again, atol=1e-5)
    plain = sample(reloaded, prompts, steps=3, guidance_scale=2.0, noise=noise, mode="base").images
    assert not torch.allclose(plain, again, atol=1e-3)  # the LoRA changes the samples
    fresh = diffusion_model(base)  # the shared base UNet was not modified by loading
    assert not any("lora_" in n for n, _ in fresh.unet.named_parameters())


def test_shipped_base_model_loads_and_matches_its_json():
    import json

    from comfy_aig.training.demo.model import CONFIG_NAME, PACKAGE_DIR, WEIGHTS_NAME

    weights = PACKAGE_DIR / WEIGHTS_NAME
    assert weights.stat().st_size <= 10 * 2**20
    model = DemoBaseModel.load()
    side = json.loads((PACKAGE_DIR / CONFIG_NAME).read_text())
    assert {k: v for k, v in side.items() if k != "training"} == model.config
    assert model.config["scheduler"]["prediction_type"] == "v_prediction"
    assert "train_base" in side["training"]["command"] and side["training"]["steps_done"] > 0
    assert 5e5 < sum(p.numel() for p in model.unet.parameters()) < 2e6

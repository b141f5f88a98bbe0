"""DRaFT-K / DRaFT-LV / KL loss (training/draft.py) on a tiny pixel-space diffusers UNet."""

from __future__ import annotations

import pytest
import torch

from aig_testkit.diffusers_fixtures import lora_parameters, redness, tiny_pixel_model
from comfy_aig.training import draft as draft_module
from comfy_aig.training.draft import DraftSettings, draft_step
from comfy_aig.training.rewards import WeightedReward

PROMPTS = ["red circle", "a square"]


def _noise(seed=0, batch=2):
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _check_step(model, settings):
    for p in lora_parameters(model.unet):
        p.requires_grad_(True)
    out = draft_step(model, PROMPTS, redness, settings, noise=_noise(), generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out.loss)
    assert out.metrics["kl"] == 0.0  # LoRA B = 0 at init: tuned == base
    out.loss.backward()
    grads = [p.grad for p in lora_parameters(model.unet)]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    frozen = [p for n, p in model.unet.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    with torch.no_grad():
        for p in lora_parameters(model.unet):
            p -= 0.5 * p.grad.sign() * 0.05
    after = draft_step(model, PROMPTS, redness, settings, noise=_noise(), generator=torch.Generator().manual_seed(1))
    assert after.metrics["kl"] > 0
    return out


def test_draft_k_step():
    out = _check_step(tiny_pixel_model("epsilon"), DraftSettings(steps=4, guidance_scale=2.0, k=2, kl_weight=1.0))
    assert out.metrics["grad_steps"] == 2
    assert out.metrics["nfe_per_image"] == 2 * 4 + 2 * 2  # chain + base calls of the KL term
    assert out.images.shape == (2, 3, 8, 8)


def test_draft_lv_step():
    out = _check_step(tiny_pixel_model("v_prediction"), DraftSettings(steps=3, guidance_scale=2.0, lv=2, kl_weight=0.5))
    assert out.metrics["grad_steps"] == 2
    assert out.images.shape == (2, 3, 8, 8)


def test_checkpointing_is_non_reentrant(monkeypatch):
    calls = []
    real = draft_module.checkpoint

    def spy(fn, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(draft_module, "checkpoint", spy)
    model = tiny_pixel_model("epsilon", lora_init="random")
    for p in lora_parameters(model.unet):
        p.requires_grad_(True)
    out = draft_step(model, PROMPTS, redness, DraftSettings(steps=3, guidance_scale=1.0, k=2), noise=_noise())
    out.loss.backward()
    assert calls == [False, False]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(model.unet))


def test_random_k_in_range_and_reproducible():
    model = tiny_pixel_model("epsilon")
    s = DraftSettings(steps=4, guidance_scale=1.0, k=3, random_k=True, track_kl=False)
    ks = [draft_step(model, PROMPTS, redness, s, noise=_noise(), generator=torch.Generator().manual_seed(i))
          .metrics["grad_steps"] for i in range(5)]
    assert set(ks) <= {1, 2, 3} and len(set(ks)) > 1
    again = [draft_step(model, PROMPTS, redness, s, noise=_noise(), generator=torch.Generator().manual_seed(i))
             .metrics["grad_steps"] for i in range(5)]
    assert ks == again


def test_weighted_reward_sums():
    images = torch.rand(3, 3, 4, 4)
    combined = WeightedReward([(2.0, redness), (-1.0, lambda x, p: x.mean(dim=(1, 2, 3)))])
    torch.testing.assert_close(combined(images, [""] * 3), 2 * redness(images) - images.mean(dim=(1, 2, 3)))


def test_settings_validation():
    with pytest.raises(ValueError, match="k must be in"):
        DraftSettings(steps=3, k=4)
    with pytest.raises(ValueError, match="lv"):
        DraftSettings(lv=-1)
    with pytest.raises(ValueError, match="kl_weight"):
        DraftSettings(kl_weight=-0.1)


def test_reward_rises_with_fixed_noise():
    """Ten DRaFT-1 steps with Adam on a toy redness reward and fixed noise raise the reward."""
    model = tiny_pixel_model("epsilon")
    params = lora_parameters(model.unet)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=3e-2)
    settings = DraftSettings(steps=3, guidance_scale=1.0, k=1, track_kl=False)
    rewards = []
    for _ in range(10):
        out = draft_step(model, PROMPTS, redness, settings, noise=_noise(3))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        rewards.append(out.metrics["reward_mean"])
    assert rewards[-1] > rewards[0] + 0.05, rewards

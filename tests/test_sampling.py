"""DDIM + CFG + AIG sampler (training/sampling.py) on a tiny pixel-space diffusers UNet."""

from __future__ import annotations

import pytest
import torch

from aig_testkit.diffusers_fixtures import make_scheduler, tiny_pixel_model
from comfy_aig.core.aig import progress_from_timestep
from comfy_aig.core.schedules import make_schedule
from comfy_aig.training.sampling import (
    adapter_enabled,
    ddim_step,
    ddim_timesteps,
    sample,
)

PROMPTS = ["red circle", "a square"]


def _noise(seed=0):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def eps_model():
    return tiny_pixel_model("epsilon", lora_init="random")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_ddim_step_matches_diffusers(kind):
    model = tiny_pixel_model(kind)
    reference = make_scheduler(kind)
    timesteps = ddim_timesteps(model.scheduler, 6)
    reference.set_timesteps(6)
    x_ours = x_ref = _noise()
    for i, t in enumerate(timesteps):
        out = torch.sin(x_ours * (i + 1))  # any deterministic stand-in for a model output
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        x_ours = ddim_step(model, out, x_ours, t, t_prev)
        x_ref = reference.step(torch.sin(x_ref * (i + 1)), t, x_ref, eta=0.0).prev_sample
    torch.testing.assert_close(x_ours, x_ref, rtol=1e-5, atol=1e-5)


def test_progress_endpoints():
    assert progress_from_timestep(999, t_max=1000 - 1) == 0.0
    assert progress_from_timestep(0, t_max=1000 - 1) == 1.0


def test_adapter_toggle_restores_state(eps_model):
    x, t = _noise(), torch.tensor([500, 500])
    cond = eps_model.encode_prompts(PROMPTS).unet_kwargs()
    tuned = eps_model.unet(x, t, **cond).sample
    with adapter_enabled(eps_model.unet, False):
        base = eps_model.unet(x, t, **cond).sample
    assert not torch.allclose(tuned, base)
    torch.testing.assert_close(eps_model.unet(x, t, **cond).sample, tuned)


def test_aig_endpoints_equal_base_and_tuned(eps_model):
    kw = dict(steps=4, guidance_scale=3.0, noise=_noise())
    base = sample(eps_model, PROMPTS, mode="base", **kw)
    tuned = sample(eps_model, PROMPTS, mode="tuned", **kw)
    g0 = sample(eps_model, PROMPTS, mode="aig", schedule=make_schedule("constant", value=0.0), **kw)
    g1 = sample(eps_model, PROMPTS, mode="aig", schedule=make_schedule("constant", value=1.0), **kw)
    torch.testing.assert_close(g0.images, base.images, rtol=0, atol=0)
    torch.testing.assert_close(g1.images, tuned.images, rtol=0, atol=0)
    assert not torch.allclose(base.images, tuned.images)
    assert base.nfe_per_image == tuned.nfe_per_image == 8  # 4 steps x CFG pair
    for schedule in (make_schedule("power", p=2.0), make_schedule("step", switch=0.5)):
        mixed = sample(eps_model, PROMPTS, mode="aig", schedule=schedule, **kw)
        gammas = [schedule(progress_from_timestep(t, t_max=1000 - 1)) for t in ddim_timesteps(eps_model.scheduler, 4)]
        # a branch with weight exactly 0 is skipped: 2 evaluations (CFG pair) per branch that runs
        assert mixed.nfe_per_image == sum(2 * (g > 0) + 2 * (g < 1) for g in gammas)
        assert not torch.allclose(mixed.images, base.images) and not torch.allclose(mixed.images, tuned.images)


def test_lora_scale_zero_is_base_and_cfg_one_single_call(eps_model):
    kw = dict(steps=3, guidance_scale=1.0, noise=_noise(1), return_latents=True)
    base = sample(eps_model, PROMPTS, mode="base", **kw)
    zero = sample(eps_model, PROMPTS, mode="tuned", lora_scale=0.0, **kw)
    torch.testing.assert_close(zero.latents, base.latents)
    assert base.nfe_per_image == 3
    half = sample(eps_model, PROMPTS, mode="tuned", lora_scale=0.5, **kw)
    full = sample(eps_model, PROMPTS, mode="tuned", **kw)
    assert not torch.allclose(half.latents, full.latents)
    torch.testing.assert_close(sample(eps_model, PROMPTS, mode="tuned", **kw).latents, full.latents)  # scale restored


def test_bad_inputs(eps_model):
    with pytest.raises(ValueError, match="valid modes"):
        sample(eps_model, PROMPTS, steps=2, mode="nope")
    with pytest.raises(ValueError, match="needs a schedule"):
        sample(eps_model, PROMPTS, steps=2, mode="aig")
    with pytest.raises(ValueError, match="noise has batch"):
        sample(eps_model, PROMPTS, steps=2, noise=torch.zeros(3, 3, 8, 8))

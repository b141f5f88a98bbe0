"""AIG guider against a real in-process ComfyUI on the shallow SD1.5 fixture (needs COMFYUI_ROOT).

These tests pin the LoRA to the weight-hook route (lora_route='hooks'); test_guider_bypass.py covers the
unmerged route that 'auto' picks for plain LoRAs.

Exactness claims: g == 0 and g == 1 are compared bit for bit with ComfyUI's plain CFGGuider (a skipped
branch is never evaluated and the hook applies the same fp32 LoRA merge as LoraLoader); the three
tuned-model inputs agree bit for bit; the p = 2 run matches a hand-mixed Euler loop to 1e-5 (the
reference computes gamma with its own formula, so float rounding of s may differ in the last bits;
measured on this fixture: bit-identical, max |ref| = 227).
"""

from __future__ import annotations

import math

import pytest
import torch

from aig_testkit.aig_sampling import (
    LORA_STRENGTH,
    SAMPLERS,
    denoise_once,
    load_unet,
    make_noise,
    plain_cfg,
    run_guider,
    sigmas_for,
    with_lora,
)

pytestmark = pytest.mark.comfyui

CFG = 5.0
STRENGTH = LORA_STRENGTH


@pytest.fixture(scope="module")
def world(aig_world):
    return aig_world


def _schedule(name="power", **params):
    from comfy_aig.core.schedules import make_schedule

    return make_schedule(name, **params)


def _aig(world, tuned, schedule, noise, sigmas, sampler="euler", tolerance=0.0):
    from comfy_aig.nodes.guider import build_guider

    guider = build_guider(world["base"], world["positive"], world["negative"], CFG, tuned, schedule, tolerance)
    return run_guider(guider, noise, sigmas, sampler), guider


def _tuned(world, how, route="hooks"):
    from comfy_aig.nodes.tuned_model import resolve_tuned

    if how == "lora_file":
        return resolve_tuned(world["base"], lora_path=world["lora_path"], lora_strength=STRENGTH, lora_route=route)
    if how == "lora_model":
        return resolve_tuned(world["base"], tuned_model=world["lora_model"], lora_route=route)
    return resolve_tuned(world["base"], tuned_model=world["other_lora_model"])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["lora_file", "lora_model"])
def test_endpoints_equal_plain_cfg_bitwise(world, how):
    noise = make_noise(2)
    sigmas = sigmas_for(world["base"], 6)
    base_ref = plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise, sigmas)
    tuned_ref = plain_cfg(world["lora_model"], world["positive"], world["negative"], CFG, noise, sigmas)
    assert (base_ref - tuned_ref).abs().max() > 1e-2  # the LoRA changes the result, so the test can fail

    tuned = _tuned(world, how)
    assert tuned.route == "hooks"
    out0, guider0 = _aig(world, tuned, _schedule("constant", value=0.0), noise, sigmas)
    assert torch.equal(out0, base_ref)
    assert guider0.calls == {"base": 6, "tuned": 0}
    out1, guider1 = _aig(world, tuned, _schedule("constant", value=1.0), noise, sigmas)
    assert torch.equal(out1, tuned_ref)
    assert guider1.calls == {"base": 0, "tuned": 6}


@pytest.mark.slow
def test_power_schedule_equals_hand_mixed_reference(world):
    """p = 2 over 8 Euler steps vs an independent loop that calls both models per step and mixes by hand."""
    noise = make_noise(2, seed=3)
    sigmas = sigmas_for(world["base"], 8)
    out, guider = _aig(world, _tuned(world, "lora_file"), _schedule("power", p=2.0), noise, sigmas)
    # step 0 (t = 999) has g = 0 exactly and step 7 (t = 0) g = 1: one branch skipped on each
    assert guider.calls == {"base": 7, "tuned": 7}

    sampling = world["base"].get_model_object("model_sampling")
    x = sampling.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), max_denoise=True)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]  # float32 0-dim tensors, as k-diffusion's Euler uses
        t = float(sampling.timestep(sigma.reshape(1))[0])
        g = (1.0 - t / 999.0) ** 2
        d_base = denoise_once(world["base"], world["positive"], world["negative"], CFG, x, float(sigma))
        d_tuned = denoise_once(world["lora_model"], world["positive"], world["negative"], CFG, x, float(sigma))
        denoised = (1.0 - g) * d_base + g * d_tuned
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    reference = world["base"].model.process_latent_out(x)
    assert (out - world["base"].model.process_latent_out(x)).abs().max() <= 1e-5 * reference.abs().max()


@pytest.mark.slow
def test_three_tuned_inputs_agree(world):
    noise = make_noise(2, seed=5)
    sigmas = sigmas_for(world["base"], 5)
    outs = {}
    for how in ("lora_file", "lora_model", "other_checkpoint"):
        tuned = _tuned(world, how)
        assert tuned.route == ("model" if how == "other_checkpoint" else "hooks")
        outs[how], _ = _aig(world, tuned, _schedule("power", p=2.0), noise, sigmas)
    assert torch.equal(outs["lora_file"], outs["lora_model"])
    assert torch.equal(outs["lora_file"], outs["other_checkpoint"])


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_batch2(world, sampler):
    """Each sampler: g == 0 equals plain CFG, and every model call is weighted by gamma(progress(sigma))."""
    from comfy_aig.nodes.guider import AIGCFGGuider

    noise = make_noise(2, seed=7)
    sigmas = sigmas_for(world["base"], 4, sampler=sampler)
    plain = plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise, sigmas, sampler)
    out0, _ = _aig(world, _tuned(world, "lora_file"), _schedule("constant", value=0.0), noise, sigmas, sampler)
    assert torch.equal(out0, plain)

    seen = []
    original = AIGCFGGuider._plan

    def spy(self, sigma):
        plan = original(self, sigma)
        seen.append((sigma.clone(), plan))
        return plan

    AIGCFGGuider._plan = spy
    try:
        out, _ = _aig(world, _tuned(world, "lora_file"), _schedule("power", p=2.0), noise, sigmas, sampler)
    finally:
        AIGCFGGuider._plan = original
    assert out.shape == noise.shape and torch.isfinite(out).all()
    sampling = world["base"].get_model_object("model_sampling")
    for sigma, plan in seen:
        assert sigma.shape == (2,)
        s = 1.0 - float(sampling.timestep(sigma[:1])[0]) / 999.0
        assert math.isclose(plan.weights[0], min(max(s, 0.0), 1.0) ** 2, abs_tol=1e-9)
    assert any(0.0 < plan.weights[0] < 1.0 for _, plan in seen)


@pytest.mark.slow
def test_weights_restored_after_sampling(world):
    noise = make_noise(1, seed=11)
    sigmas = sigmas_for(world["base"], 4)
    before_state = {k: v.clone() for k, v in world["base"].model.state_dict().items()}
    before = plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise, sigmas)
    for how in ("lora_file", "lora_model", "other_checkpoint"):
        _aig(world, _tuned(world, how), _schedule("power", p=2.0), noise, sigmas)
        after_state = world["base"].model.state_dict()
        assert all(torch.equal(before_state[k], after_state[k]) for k in before_state), how
    after = plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise, sigmas)
    assert torch.equal(before, after)


def test_window_runs_one_branch_outside(world):
    """A 20% window: base-only steps before it, tuned-only after, both inside."""
    noise = make_noise(1, seed=13)
    sigmas = sigmas_for(world["base"], 10)
    _, guider = _aig(world, _tuned(world, "lora_file"), _schedule("linear", start=0.4, end=0.6), noise, sigmas)
    both = guider.calls["base"] + guider.calls["tuned"] - 10
    assert guider.calls["base"] < 10 and guider.calls["tuned"] < 10
    assert 1 <= both <= 3


def test_cfg_patches_apply_to_each_branch(world):
    """A model CFG patch (sampler_cfg_function + post-CFG hook) keeps working: g == 0 equals plain CFG on the
    patched model bit for bit, and the post-CFG hook runs once per evaluated branch."""
    from comfy_aig.nodes.guider import build_guider
    from comfy_aig.nodes.tuned_model import resolve_tuned

    seen = []

    def half_cfg(args):  # eps-space CFG at half the scale
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"] * 0.5

    def post_cfg(args):
        seen.append(float(args["sigma"][0]))
        return args["denoised"]

    patched = world["base"].clone()
    patched.set_model_sampler_cfg_function(half_cfg)
    patched.set_model_sampler_post_cfg_function(post_cfg)
    noise = make_noise(1, seed=17)
    sigmas = sigmas_for(world["base"], 3)
    reference = plain_cfg(patched, world["positive"], world["negative"], CFG, noise, sigmas)
    assert not torch.equal(reference, plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise, sigmas))
    seen.clear()
    tuned = resolve_tuned(patched, lora_path=world["lora_path"], lora_strength=STRENGTH, lora_route="hooks")
    g0 = build_guider(patched, world["positive"], world["negative"], CFG, tuned, _schedule("constant", value=0.0))
    assert torch.equal(run_guider(g0, noise, sigmas), reference)
    seen.clear()
    p2 = build_guider(patched, world["positive"], world["negative"], CFG, tuned, _schedule("power", p=2.0))
    run_guider(p2, noise, sigmas)
    assert len(seen) == p2.calls["base"] + p2.calls["tuned"] > 3


# -- errors ------------------------------------------------------------------------------------


def test_lora_matching_no_keys_is_an_error(world, tmp_path):
    from safetensors.torch import save_file

    from comfy_aig.core.aig import AIGError
    from comfy_aig.nodes.tuned_model import resolve_tuned

    bogus = tmp_path / "bogus_lora.safetensors"
    save_file({"lora_unet_nowhere_to_q.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_nowhere_to_q.lora_up.weight": torch.zeros(8, 4)}, str(bogus))
    with pytest.raises(AIGError, match="matches none of the model's weights"):
        resolve_tuned(world["base"], lora_path=str(bogus), lora_strength=1.0)
    unmatched_model = with_lora(world["base"], bogus, 1.0)
    with pytest.raises(AIGError, match="no weight patches beyond the base"):
        resolve_tuned(world["base"], tuned_model=unmatched_model)


def test_exactly_one_tuned_input(world):
    from comfy_aig.core.aig import AIGError
    from comfy_aig.nodes.tuned_model import resolve_tuned

    with pytest.raises(AIGError, match="exactly one tuned model"):
        resolve_tuned(world["base"])
    with pytest.raises(AIGError, match="exactly one tuned model"):
        resolve_tuned(world["base"], tuned_model=world["lora_model"], lora_path=world["lora_path"])
    with pytest.raises(AIGError, match="strength is 0"):
        resolve_tuned(world["base"], lora_path=world["lora_path"], lora_strength=0.0)


def test_other_architecture_is_an_error(world, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from aig_testkit.sd_fixtures import SHALLOW_SD15_UNET, unet_to_ldm
    from comfy_aig.core.aig import AIGError
    from comfy_aig.nodes.tuned_model import resolve_tuned

    config = dict(SHALLOW_SD15_UNET, layers_per_block=2)
    unet = UNet2DConditionModel(**config)
    path = tmp_path / "deeper_unet.safetensors"
    save_file({k: v.detach().half().contiguous() for k, v in unet_to_ldm(unet).items()}, str(path))
    deeper = load_unet(path)
    with pytest.raises(AIGError, match="architecture"):
        resolve_tuned(world["base"], tuned_model=deeper)


def test_validation_checks_what_spans_inputs(comfy_inprocess):
    """validate_inputs keeps only the cross-input checks (ComfyUI repeats its failure once per argument);
    every number is left to ComfyUI's min/max and every combo to its list type."""
    import inspect

    from comfy_aig.nodes.combos import ListedCombo
    from comfy_aig.nodes.guider import AIGGuider, AIGSampler
    from comfy_aig.nodes.schedule_preview import AIGSchedulePreview

    assert inspect.getfullargspec(AIGGuider.validate_inputs).args[1:] == ["lora_name", "tuned_model"]
    assert inspect.getfullargspec(AIGSchedulePreview.validate_inputs).args[1:] == ["window_start", "window_end"]
    for node in (AIGGuider, AIGSampler, AIGSchedulePreview):
        combos = [i for i in node.define_schema().inputs if hasattr(i, "options")]
        assert combos and all(isinstance(c, ListedCombo) and c.get_io_type() == list(c.options) for c in combos)
    assert AIGSchedulePreview.validate_inputs(window_start=0.9, window_end=0.1) == (
        "window start (0.9) must be below window end (0.1); use start=0, end=1 for no window")
    assert AIGSchedulePreview.validate_inputs(window_start=None, window_end=0.1) is True  # linked: at run time
    assert AIGSampler.validate_inputs(lora_name=None) is True  # linked: at run time
    assert "exactly one tuned model" in AIGGuider.validate_inputs(lora_name="None")
    assert "exactly one tuned model" in AIGGuider.validate_inputs(lora_name="x.safetensors", tuned_model=None)
    assert AIGGuider.validate_inputs(lora_name="None", tuned_model=None) is True
    assert "x.safetensors" in AIGGuider.validate_inputs(lora_name="x.safetensors")  # not in the loras folder

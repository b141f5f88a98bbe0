"""AIG on every model family: SD1.x, SD2.x v-prediction, SDXL, SD3 (rectified flow) and Flux (in-process).

Tiny models are built from ComfyUI's own model classes (tests/aig_testkit/families.py), LoRAs in each
family's real key layouts from ComfyUI's key map. The same equivalences as on the SD1.5 fixture:
g = 0 is plain CFG on the base bit for bit; g = 1 on the hooks route is the LoraLoader merge bit for bit, and
unmerged it matches to float rounding (one model call: multi-step runs of random models amplify rounding);
a mixed model call equals the hand mix of the two branches at the weight of ComfyUI's own percent_to_sigma.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfyui

CFG = 3.0
STRENGTH = 0.8
LAYOUTS = {"sd15": ["kohya"], "sd2_v": ["kohya"], "sdxl": ["kohya"], "sd3": ["kohya", "diffusers"],
           "flux": ["kohya", "diffusers"]}  # flux "kohya" keys are BFL block names (lora_unet_double_blocks_...)
CASES = [(name, layout) for name, layouts in LAYOUTS.items() for layout in layouts]


@pytest.fixture(scope="module")
def families(comfy_inprocess):
    from aig_testkit.families import FAMILIES, family

    return {name: family(name) for name in FAMILIES}


def _schedule(name="power", **params):
    from comfy_aig.core.schedules import make_schedule

    return make_schedule(name, **params)


def _lora_file(fam, layout, tmp_path):
    from safetensors.torch import save_file

    from aig_testkit.families import lora_state_dict

    path = tmp_path / f"{fam.name}_{layout}.safetensors"
    save_file(lora_state_dict(fam.model, layout), str(path))
    return path


def _merged(fam, path):
    from aig_testkit.aig_sampling import with_lora

    return with_lora(fam.model, path, STRENGTH)


def _aig(fam, tuned, schedule, cfg=CFG, positive=None):
    from comfy_aig.nodes.guider import build_guider

    return build_guider(fam.model, positive or fam.positive, fam.negative, cfg, tuned, schedule)


def _route(fam, path, route):
    from comfy_aig.nodes.tuned_model import resolve_tuned

    return resolve_tuned(fam.model, lora_path=str(path), lora_strength=STRENGTH, lora_route=route)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_progress_is_the_inverse_of_comfyuis_percent_to_sigma(families, name):
    """s(percent_to_sigma(p)) = p in every family (discrete models: to their integer timestep grid)."""
    from comfy_aig.nodes.guider import family_progress

    sampling = families[name].model.get_model_object("model_sampling")
    progress, coordinate = family_progress(sampling)
    tolerance = 1.0 / 999 if name in ("sd15", "sd2_v", "sdxl") else 1e-4  # integer timesteps; float32 sigma
    for p in (0.05, 0.25, 0.5, 0.75, 0.95):
        sigma = torch.tensor([sampling.percent_to_sigma(p)])
        assert progress(float(coordinate(sigma)[0])) == pytest.approx(p, abs=tolerance)


@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_shifted_flow_schedules_keep_the_mapping(families, shift):
    """A user's ModelSamplingSD3 / ModelSamplingFlux shift changes sigma(p); progress follows it."""
    import comfy.model_sampling

    from comfy_aig.nodes.guider import family_progress

    for name, kind in (("sd3", comfy.model_sampling.ModelSamplingDiscreteFlow),
                       ("flux", comfy.model_sampling.ModelSamplingFlux)):
        sampling = type("Shifted", (kind, comfy.model_sampling.CONST), {})(families[name].model.model.model_config)
        sampling.set_parameters(shift=shift)
        progress, coordinate = family_progress(sampling)
        for p in (0.1, 0.5, 0.9):
            assert progress(float(coordinate(torch.tensor([sampling.percent_to_sigma(p)]))[0])) == pytest.approx(p, abs=1e-4)  # float32 sigma


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_endpoints_equal_plain_cfg_and_the_merged_lora(families, name, layout, tmp_path):
    from aig_testkit.aig_sampling import plain_cfg, run_guider, sigmas_for
    from aig_testkit.families import noise_for

    fam = families[name]
    path = _lora_file(fam, layout, tmp_path)
    noise, sigmas = noise_for(fam, batch=2, seed=3), sigmas_for(fam.model, 3)
    base = plain_cfg(fam.model, fam.positive, fam.negative, CFG, noise, sigmas)
    merged = plain_cfg(_merged(fam, path), fam.positive, fam.negative, CFG, noise, sigmas)
    assert not torch.equal(base, merged)  # the LoRA does something
    hooks = _route(fam, path, "hooks")
    assert hooks.route == "hooks"
    assert torch.equal(run_guider(_aig(fam, hooks, _schedule("constant", value=0.0)), noise, sigmas), base)
    assert torch.equal(run_guider(_aig(fam, hooks, _schedule("constant", value=1.0)), noise, sigmas), merged)


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_unmerged_route_matches_the_merge_on_one_call(families, name, layout, tmp_path):
    """Every layout runs unmerged, fused-qkv slices (offset patches) included; g = 1 equals the merge."""
    from aig_testkit.aig_sampling import denoise_once, guider_denoise_once
    from aig_testkit.families import noise_for

    fam = families[name]
    path = _lora_file(fam, layout, tmp_path)
    tuned = _route(fam, path, "bypass")
    assert tuned.route == "bypass" and len(tuned.bypass) == 6
    sampling = fam.model.get_model_object("model_sampling")
    sigma = sampling.percent_to_sigma(0.3)
    x = noise_for(fam, batch=2, seed=5) * (sigma if name in ("sd3", "flux") else (sigma**2 + 1) ** 0.5)
    expected = denoise_once(_merged(fam, path), fam.positive, fam.negative, CFG, x, sigma)
    got = guider_denoise_once(_aig(fam, tuned, _schedule("constant", value=1.0)), x, sigma)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_mixed_call_is_the_hand_mix_at_comfyuis_percent(families, name, tmp_path):
    """At sigma = percent_to_sigma(0.4), p = 2 mixes with g = 0.4^2: (1 - g) base + g tuned, per branch CFG."""
    from aig_testkit.aig_sampling import denoise_once, guider_denoise_once
    from aig_testkit.families import noise_for

    fam = families[name]
    path = _lora_file(fam, LAYOUTS[name][-1], tmp_path)
    tuned = _route(fam, path, "hooks")
    sigma = fam.model.get_model_object("model_sampling").percent_to_sigma(0.4)
    x = noise_for(fam, batch=1, seed=9)
    guider = _aig(fam, tuned, _schedule("power", p=2.0))
    got = guider_denoise_once(guider, x, sigma)
    g = guider.weighting.weight(float(guider.noise_coordinate(torch.tensor([sigma]))[0]))
    assert g == pytest.approx(0.16, abs=1e-3)
    base = denoise_once(fam.model, fam.positive, fam.negative, CFG, x, sigma)
    merged = denoise_once(_merged(fam, path), fam.positive, fam.negative, CFG, x, sigma)
    torch.testing.assert_close(got, (1 - g) * base + g * merged, rtol=1e-5, atol=1e-5 * float(base.abs().max()))


def test_flux_guidance_is_honoured_and_cfg_one_runs_positives_only(families, tmp_path):
    """Flux is guidance-distilled: at cfg 1 each branch runs its positive only; FluxGuidance's value counts."""
    from aig_testkit.aig_sampling import plain_cfg, run_guider, sigmas_for
    from aig_testkit.families import noise_for, random_conds

    fam = families["flux"]
    tuned = _route(fam, _lora_file(fam, "diffusers", tmp_path), "auto")
    noise, sigmas = noise_for(fam, seed=2), sigmas_for(fam.model, 3)
    low, _ = random_conds("flux", seed=0, guidance=1.0)
    calls = []
    original = fam.model.model.apply_model

    def counting(x, t, **kwargs):
        calls.append(x.shape[0])
        return original(x, t, **kwargs)

    fam.model.model.apply_model = counting
    try:
        out = run_guider(_aig(fam, tuned, _schedule("constant", value=0.0), cfg=1.0), noise, sigmas)
    finally:
        del fam.model.model.apply_model
    assert calls == [1] * 3  # one row per call: the base positive only (g = 0 skips the tuned branch)
    assert torch.equal(out, plain_cfg(fam.model, fam.positive, fam.negative, 1.0, noise, sigmas))
    lowered = run_guider(_aig(fam, tuned, _schedule("constant", value=0.0), cfg=1.0, positive=low), noise, sigmas)
    assert not torch.equal(out, lowered)  # guidance 3.5 vs 1.0 reaches the model

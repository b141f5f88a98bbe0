"""The unmerged ("bypass") LoRA route of the AIG guider, in-process ComfyUI, shallow SD1.5 fixture (COMFYUI_ROOT).

Exactness: where the tuned branch is skipped (g == 0) the bypass route is bit-identical to plain CFG; where
it runs, it computes W x + s * up(down(x)) instead of (W + s * up @ down) x, which differ by float rounding
only. Measured on this fixture (8 Euler steps, |latent| up to ~290): g == 1 vs LoraLoader merged 1.0e-3
absolute = 3.5e-6 of the largest value; p = 2 vs the weight-hook route 1.5e-4. Tolerance: 2e-5 of the
largest value (fp32 eps is 1.2e-7; about 20 layers and 8 steps compound it).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from aig_testkit.aig_sampling import (
    LORA_STRENGTH,
    SAMPLERS,
    make_noise,
    plain_cfg,
    run_guider,
    sigmas_for,
    with_lora,
)

pytestmark = pytest.mark.comfyui

CFG = 5.0
STRENGTH = LORA_STRENGTH
REL_TOL = 2e-5


@pytest.fixture(scope="module")
def world(aig_world):
    return aig_world


def _schedule(name="power", **params):
    from comfy_aig.core.schedules import make_schedule

    return make_schedule(name, **params)


def _tuned(world, route, lora_path=None, how="lora_file"):
    from comfy_aig.nodes.tuned_model import resolve_tuned

    if how == "lora_model":
        return resolve_tuned(world["base"], tuned_model=world["lora_model"], lora_route=route)
    return resolve_tuned(world["base"], lora_path=lora_path or world["lora_path"], lora_strength=STRENGTH,
                         lora_route=route)


def _aig(world, tuned, schedule, noise, sigmas, sampler="euler"):
    from comfy_aig.nodes.guider import build_guider

    guider = build_guider(world["base"], world["positive"], world["negative"], CFG, tuned, schedule)
    return run_guider(guider, noise, sigmas, sampler), guider


def _close(a, b):
    return (a - b).abs().max() <= REL_TOL * b.abs().max()


def _variant_lora(world, tmp_path, name, extra: dict) -> str:
    """The fixture LoRA plus extra kohya tensors, saved as a new file."""
    state = load_file(world["lora_path"])
    state.update(extra)
    path = tmp_path / name
    save_file(state, str(path))
    return str(path)


def test_auto_picks_bypass_for_a_plain_lora(world):
    assert _tuned(world, "auto").route == "bypass"
    assert _tuned(world, "auto", how="lora_model").route == "bypass"
    assert _tuned(world, "hooks").route == "hooks"
    tuned = _tuned(world, "bypass")
    assert len(tuned.bypass) == 32  # every patch of the fixture LoRA runs unmerged


@pytest.mark.slow
def test_endpoints(world):
    """g == 0: bit-identical to plain CFG on the base. g == 1: LoraLoader's merged result up to rounding."""
    noise = make_noise(2)
    sigmas = sigmas_for(world["base"], 8)
    base_ref = plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise, sigmas)
    merged_ref = plain_cfg(world["lora_model"], world["positive"], world["negative"], CFG, noise, sigmas)
    assert (base_ref - merged_ref).abs().max() > 1e-2
    tuned = _tuned(world, "bypass")
    out0, guider0 = _aig(world, tuned, _schedule("constant", value=0.0), noise, sigmas)
    assert torch.equal(out0, base_ref) and guider0.calls == {"base": 8, "tuned": 0}
    out1, guider1 = _aig(world, tuned, _schedule("constant", value=1.0), noise, sigmas)
    assert _close(out1, merged_ref) and guider1.calls == {"base": 0, "tuned": 8}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_matches_weight_hook_route_for_every_sampler(world, sampler):
    noise = make_noise(2, seed=7)
    sigmas = sigmas_for(world["base"], 4, sampler=sampler)
    hooks, _ = _aig(world, _tuned(world, "hooks"), _schedule("power", p=2.0), noise, sigmas, sampler)
    bypass, guider = _aig(world, _tuned(world, "bypass"), _schedule("power", p=2.0), noise, sigmas, sampler)
    assert not torch.equal(hooks, plain_cfg(world["base"], world["positive"], world["negative"], CFG, noise,
                                            sigmas, sampler))
    assert _close(bypass, hooks), (bypass - hooks).abs().max()
    assert guider.calls["base"] > 0 and guider.calls["tuned"] > 0


@pytest.mark.slow
def test_file_and_loraloader_inputs_agree_bitwise(world):
    noise = make_noise(2, seed=5)
    sigmas = sigmas_for(world["base"], 5)
    from_file, _ = _aig(world, _tuned(world, "auto"), _schedule("power", p=2.0), noise, sigmas)
    from_model, _ = _aig(world, _tuned(world, "auto", how="lora_model"), _schedule("power", p=2.0), noise, sigmas)
    assert torch.equal(from_file, from_model)


def test_one_batched_forward_per_step_and_no_weight_change(world):
    """Both branches share one UNet call per mixed step (batch 4B), and the weights never change."""
    diffusion = world["base"].model.diffusion_model
    before = {k: v.clone() for k, v in diffusion.state_dict().items()}
    batches, unchanged = [], []

    def spy(module, args):
        batches.append(args[0].shape[0])
        unchanged.append(all(torch.equal(v, before[k]) for k, v in module.state_dict().items()))

    handle = diffusion.register_forward_pre_hook(spy)
    try:
        _aig(world, _tuned(world, "bypass"), _schedule("power", p=2.0), make_noise(2, seed=9),
             sigmas_for(world["base"], 8))
    finally:
        handle.remove()
    # step 0: g = 0 (base cond + uncond), steps 1-6 mixed, step 7: g = 1 (tuned only); batch 2 each
    assert batches == [4] + [8] * 6 + [4]
    assert all(unchanged)


def test_hooks_and_wrapper_removed_after_sampling(world):
    from comfy_aig.nodes.lora_bypass import WRAPPER_KEY

    _aig(world, _tuned(world, "bypass"), _schedule("power", p=2.0), make_noise(1), sigmas_for(world["base"], 3))
    assert all(not m._forward_hooks for m in world["base"].model.modules())
    assert WRAPPER_KEY not in str(world["base"].model_options)


@pytest.mark.slow
def test_conv_lora_runs_unmerged(world, tmp_path):
    """A LoCon-style LoRA on 3x3 and 1x1 convolutions (no mid factor) runs unmerged and matches the hooks."""
    g = torch.Generator().manual_seed(3)
    extra = {}
    for key, (out_dim, in_dim, k) in {"lora_unet_conv_in": (320, 4, 3),
                                      "lora_unet_down_blocks_0_resnets_0_conv1": (320, 320, 3),
                                      "lora_unet_down_blocks_0_attentions_0_proj_in": (320, 320, 1)}.items():
        extra[f"{key}.lora_down.weight"] = torch.randn(4, in_dim, k, k, generator=g) * 0.05
        extra[f"{key}.lora_up.weight"] = torch.randn(out_dim, 4, 1, 1, generator=g) * 0.3
        extra[f"{key}.alpha"] = torch.tensor(2.0)
    locon = _variant_lora(world, tmp_path, "locon.safetensors", extra)
    bypass_source = _tuned(world, "bypass", locon)
    assert len(bypass_source.bypass) == 35
    noise, sigmas = make_noise(2, seed=4), sigmas_for(world["base"], 4)
    hooks, _ = _aig(world, _tuned(world, "hooks", locon), _schedule("power", p=2.0), noise, sigmas)
    plain_lora, _ = _aig(world, _tuned(world, "hooks"), _schedule("power", p=2.0), noise, sigmas)
    assert (hooks - plain_lora).abs().max() > 1e-3  # the conv factors matter
    bypass, _ = _aig(world, bypass_source, _schedule("power", p=2.0), noise, sigmas)
    assert _close(bypass, hooks), (bypass - hooks).abs().max()


@pytest.mark.slow
def test_stacked_loras_add_up_unmerged(world, tmp_path):
    """Two LoraLoaders in a chain: both LoRAs run unmerged on the same layers; g == 1 equals the merged pair."""
    from aig_testkit.sd_fixtures import build_kohya_lora
    from comfy_aig.nodes.tuned_model import resolve_tuned

    stacked = with_lora(world["lora_model"], build_kohya_lora(tmp_path / "second.safetensors", seed=11), 0.5)
    tuned = resolve_tuned(world["base"], tuned_model=stacked, lora_route="bypass")
    assert len(tuned.bypass) == 64 and len(tuned.bypass.layers) == 32
    noise, sigmas = make_noise(1, seed=6), sigmas_for(world["base"], 4)
    merged = plain_cfg(stacked, world["positive"], world["negative"], CFG, noise, sigmas)
    single = plain_cfg(world["lora_model"], world["positive"], world["negative"], CFG, noise, sigmas)
    assert (merged - single).abs().max() > 1e-2
    out, _ = _aig(world, tuned, _schedule("constant", value=1.0), noise, sigmas)
    assert _close(out, merged), (out - merged).abs().max()


def test_lora_it_cannot_run_unmerged_falls_back_or_errors(world, tmp_path):
    """A DoRA scale needs the merged weight: 'auto' uses weight hooks, 'bypass' says why and what to do."""
    from comfy_aig.core.aig import AIGError

    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    dora = _variant_lora(world, tmp_path, "dora.safetensors", {f"{key}.dora_scale": torch.ones(320, 1)})
    assert _tuned(world, "auto", dora).route == "hooks"
    with pytest.raises(AIGError, match="cannot run this LoRA unmerged: .*DoRA.*Set lora_route to 'auto' or 'hooks'"):
        _tuned(world, "bypass", dora)
    with pytest.raises(AIGError, match="lora_route 'merged' is not one of auto, bypass, hooks"):
        _tuned(world, "merged")


def test_layer_fed_another_batch_is_an_error(world):
    """A model that folds other axes into the batch cannot map rows to branches: stop and name the fix."""
    from comfy_aig.core.aig import AIGError
    from comfy_aig.nodes.lora_bypass import WRAPPER_KEY

    bypass = _tuned(world, "bypass").bypass
    model = world["base"].model
    path = next(iter(bypass.layers))
    layer = model.get_submodule(path)
    options = {}
    with bypass.attached(model, options, (2, 3)):
        wrapper = options["transformer_options"]["wrappers"]["apply_model"][WRAPPER_KEY][0]

        def executor(x, *args, **kwargs):  # the model call has 2 rows, the layer sees 3
            return layer(torch.randn(3, 5, layer.weight.shape[1]))

        with pytest.raises(AIGError, match=f"layer {path} saw a batch of 3 rows, the model call had 2.*'hooks'"):
            wrapper(executor, torch.zeros(2, 4, 8, 8), torch.zeros(2), transformer_options={"cond_or_uncond": [0, 2]})
        assert bypass._rows is None  # the next call starts clean

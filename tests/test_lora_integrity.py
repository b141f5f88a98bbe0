"""LoRA integrity (nodes/lora_integrity.py) in-process against ComfyUI 0.3.64 (COMFYUI_ROOT): a LoRA that
cannot fully apply, or has non-finite weights, stops on every route and both inputs (file, LoraLoader MODEL)."""

from __future__ import annotations

import pytest
import torch

from aig_testkit import bad_files
from aig_testkit.aig_sampling import LORA_STRENGTH, with_lora

pytestmark = pytest.mark.comfyui
ROUTES = ("auto", "bypass", "hooks")


@pytest.fixture(scope="module")
def world(aig_world):
    return aig_world


@pytest.fixture(scope="module")
def broken(world, tmp_path_factory):
    """LoRA files derived from the world's good LoRA."""
    folder, good = tmp_path_factory.mktemp("broken_loras"), world["lora_path"]
    return {
        "wrong_width": str(bad_files.lora_with_wrong_widths(good, folder / "wrong_width.safetensors", layers=3)),
        "all_wrong": str(bad_files.lora_with_wrong_widths(good, folder / "all_wrong.safetensors", layers=10_000)),
        "nan": str(bad_files.lora_with_nan(good, folder / "nan.safetensors")),
        "extra": str(bad_files.lora_with_extra_layers(good, folder / "extra.safetensors")),
        "text_encoder": str(bad_files.lora_with_text_encoder(good, folder / "with_te.safetensors")),
        "truncated": str(bad_files.truncated(good, folder / "cut.safetensors")),
        "bare_tensor": str(bad_files.pickle_of(folder / "bare.pt", torch.zeros(4))),
    }


def _resolve(world, route, lora_path=None, tuned_model=None):
    from comfy_aig.nodes.tuned_model import resolve_tuned

    return resolve_tuned(world["base"], tuned_model=tuned_model, lora_path=lora_path, lora_strength=LORA_STRENGTH,
                         lora_route=route)


@pytest.mark.parametrize("route", ROUTES)
def test_wrong_widths_stop_with_a_count_and_a_layer(world, broken, route):
    from comfy_aig.core.aig import AIGError

    with pytest.raises(AIGError, match=r"LoRA file: 3 of 32 LoRA layers cannot be applied to this model \(e\.g\. "
                                       r"diffusion_model\..*does not fit the weight"):
        _resolve(world, route, lora_path=broken["wrong_width"])
    model = with_lora(world["base"], broken["wrong_width"], LORA_STRENGTH)  # ComfyUI only logs the mismatch
    with pytest.raises(AIGError, match=r"LoRA on base: 3 of 32 LoRA layers cannot be applied"):
        _resolve(world, route, tuned_model=model)


def test_a_lora_for_another_width_everywhere_stops(world, broken):
    from comfy_aig.core.aig import AIGError

    with pytest.raises(AIGError, match=r"32 of 32 LoRA layers cannot be applied"):
        _resolve(world, "auto", lora_path=broken["all_wrong"])


@pytest.mark.parametrize("route", ROUTES)
def test_non_finite_weights_stop(world, broken, route):
    from comfy_aig.core.aig import AIGError

    with pytest.raises(AIGError, match=r"1 of 32 LoRA layers cannot be applied .*NaN or inf"):
        _resolve(world, route, lora_path=broken["nan"])
    model = with_lora(world["base"], broken["nan"], LORA_STRENGTH)
    with pytest.raises(AIGError, match=r"1 of 32 .*NaN or inf"):
        _resolve(world, route, tuned_model=model)


def test_layers_the_model_lacks_stop(world, broken):
    from comfy_aig.core.aig import AIGError

    with pytest.raises(AIGError, match=r"'extra.safetensors': 1 of its diffusion-model layers match no layer of this "
                                       r"model \(e\.g\. lora_unet_down_blocks_7_attentions_1_transformer_blocks_9_attn1_to_q\)"):
        _resolve(world, "auto", lora_path=broken["extra"])


def test_text_encoder_keys_are_ignored_not_an_error(world, broken):
    good = _resolve(world, "bypass", lora_path=world["lora_path"])
    with_te = _resolve(world, "bypass", lora_path=broken["text_encoder"])
    assert len(with_te.bypass) == len(good.bypass) == 32


def test_dry_run_route_catches_what_the_plain_check_cannot(world, tmp_path):
    """A DoRA patch goes through ComfyUI's own calculate_weight: a wrong width is caught there too."""
    from safetensors.torch import load_file, save_file

    from comfy_aig.core.aig import AIGError

    state = load_file(world["lora_path"])
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    state[f"{key}.dora_scale"] = torch.ones(320, 1)
    state[f"{key}.lora_up.weight"] = torch.zeros(328, state[f"{key}.lora_up.weight"].shape[1])
    save_file(state, str(tmp_path / "dora_bad.safetensors"))
    with pytest.raises(AIGError, match=r"1 of 32 LoRA layers cannot be applied .*ERROR lora"):
        _resolve(world, "auto", lora_path=str(tmp_path / "dora_bad.safetensors"))


@pytest.mark.parametrize("which, message", [
    ("truncated", r"cut.safetensors is not a readable safetensors file \(.*\): expected a LoRA"),
    ("bare_tensor", r"bare.pt holds a Tensor, but a LoRA .* was expected"),
])
def test_unreadable_lora_files_name_the_file(world, broken, which, message):
    from comfy_aig.core.errors import FileLoadError

    with pytest.raises(FileLoadError, match=message):
        _resolve(world, "auto", lora_path=broken[which])


def test_the_good_lora_still_passes_every_route(world):
    routes = {route: _resolve(world, route, lora_path=world["lora_path"]).route for route in ROUTES}
    assert routes == {"auto": "bypass", "bypass": "bypass", "hooks": "hooks"}
    assert _resolve(world, "auto", tuned_model=world["lora_model"]).route == "bypass"

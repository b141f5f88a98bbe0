"""SD3 through a real ComfyUI server: the family detected by ComfyUI from a small file, AIG on it.

The tiny MMDiT of tests/aig_testkit/families.py is saved as a bare diffusion-model file (the layout of
`models/diffusion_models/sd3*.safetensors`), loaded by UNETLoader, which detects SD3 from its keys and shapes
(MMDiT, rectified flow, shift 3); its LoRA is a diffusers-layout file. Conditioning comes from the test-only
TestRandomConditioning node (tests/aig_testkit/comfy_test_nodes): SD3's text encoders are too large to build here.
Flux is not here: ComfyUI detects Flux with its true width (3072) whatever the file, so even a one-block file is
~1 GB; tests/test_families.py covers Flux in-process.
"""

from __future__ import annotations

import uuid

import pytest
import torch
from safetensors.torch import load_file, save_file

from aig_testkit.comfy import install_model
from aig_testkit.families import CONTEXT, POOLED

pytestmark = pytest.mark.comfyui

STRENGTH = 0.8


@pytest.fixture(scope="module")
def sd3_files(comfy_server, comfy_inprocess, tmp_path_factory):
    """The tiny SD3 model file and a diffusers-layout LoRA for it, installed in the server's folders."""
    from aig_testkit.families import lora_state_dict, tiny_model

    model = tiny_model("sd3", seed=3)
    folder = tmp_path_factory.mktemp("sd3_files")
    model_file, lora_file = folder / "aig_tiny_sd3.safetensors", folder / "aig_tiny_sd3_lora.safetensors"
    weights = {k: v.detach().contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    save_file(weights, str(model_file))
    save_file(lora_state_dict(model, "diffusers"), str(lora_file))  # fused-qkv slices first
    return {"model": install_model(comfy_server, "diffusion_models", model_file),
            "lora": install_model(comfy_server, "loras", lora_file)}


def _prompt(files, shift=None):
    """UNETLoader (+ ModelSamplingSD3 when shift is given), random conditioning, an empty SD3 latent, and the
    LoRA merged by LoraLoaderModelOnly at ["lora", 0]; the base model is at _model(shift)."""
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["model"], "weight_dtype": "default"}},
        "2": {"class_type": "TestRandomConditioning", "inputs": {"seed": 1, "tokens": 16, "width": CONTEXT,
                                                                 "pooled_width": POOLED}},
        "3": {"class_type": "TestRandomConditioning", "inputs": {"seed": 2, "tokens": 16, "width": CONTEXT,
                                                                 "pooled_width": POOLED}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
    }
    if shift:
        prompt["m"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": shift}}
    prompt["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": _model(shift), "lora_name": files["lora"], "strength_model": STRENGTH}}
    return prompt


def _model(shift=None):
    return ["m" if shift else "1", 0]


def _sampling(seed):
    return {"seed": seed, "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}


def _aig(model, seed, schedule="power", lora=None, tuned=None, **params):
    inputs = {"model": model, "lora_name": lora or "None", "lora_strength": STRENGTH, **_sampling(seed),
              "schedule": schedule, "p": 2.0, "switch": 0.5, "centre": 0.5, "width": 0.1, "value": 1.0,
              "window_start": 0.0, "window_end": 1.0, "skip_tolerance": 0.0, **params}
    if tuned is not None:
        inputs["tuned_model"] = tuned
    return {"class_type": "AIGSampler", "inputs": inputs}


def _save(prompt, node):
    prompt[f"s{node}"] = {"class_type": "SaveLatent", "inputs": {"samples": [node, 0],
                                                                 "filename_prefix": f"aig_test/sd3_{node}"}}


def _latent(server, entry, node):
    files = entry["outputs"][f"s{node}"]["latents"]
    return load_file(str(server.output_file(files[0])))["latent_tensor"]


def test_sd3_file_detected_and_aig_endpoints_match_ksampler(comfy_server, sd3_files):
    """g = 0 is KSampler on the base and g = 1 (weight hooks) KSampler(LoraLoaderModelOnly), bit for bit, on the
    model ComfyUI detected; the default (unmerged, fused-qkv slices) p = 2 run matches the hooks route."""
    seed = uuid.uuid4().int % 10**9
    prompt = _prompt(sd3_files)
    base, tuned = _model(), ["lora", 0]
    prompt["k0"] = {"class_type": "KSampler", "inputs": {"model": base, **_sampling(seed)}}
    prompt["k1"] = {"class_type": "KSampler", "inputs": {"model": tuned, **_sampling(seed)}}
    prompt["a0"] = _aig(base, seed, "constant", lora=sd3_files["lora"], value=0.0)
    prompt["a1"] = _aig(base, seed, "constant", tuned=tuned, value=1.0, lora_route="hooks")
    prompt["p_hooks"] = _aig(base, seed, lora=sd3_files["lora"], lora_route="hooks")
    prompt["p_unmerged"] = _aig(base, seed, lora=sd3_files["lora"])
    for node in ("k0", "k1", "a0", "a1", "p_hooks", "p_unmerged"):
        _save(prompt, node)
    entry = comfy_server.run(prompt)
    k0, k1 = _latent(comfy_server, entry, "k0"), _latent(comfy_server, entry, "k1")
    assert k0.shape == (2, 16, 8, 8)
    assert (k0 - k1).abs().max() > 1e-3, "the LoRA must change the result"
    assert torch.equal(_latent(comfy_server, entry, "a0"), k0)
    assert torch.equal(_latent(comfy_server, entry, "a1"), k1)
    hooks, unmerged = _latent(comfy_server, entry, "p_hooks"), _latent(comfy_server, entry, "p_unmerged")
    assert not torch.equal(hooks, k0) and not torch.equal(hooks, k1)
    assert (unmerged - hooks).abs().max() <= 1e-4 * hooks.abs().max()
    lines = comfy_server.log_tail(200_000)
    assert "AIG: SD3 model, gamma read at FlowProgress(shift=3.0)" in lines, lines[-3000:]


def test_sd3_user_shift_moves_the_progress_map(comfy_server, sd3_files):
    """ModelSamplingSD3(shift=6) before AIG: ComfyUI's sigmas change and the guider reads them with shift 6."""
    seed = uuid.uuid4().int % 10**9
    prompt = _prompt(sd3_files, shift=6.0)
    prompt["a"] = _aig(_model(6.0), seed, lora=sd3_files["lora"])
    _save(prompt, "a")
    comfy_server.run(prompt)
    assert "AIG: SD3 model, gamma read at FlowProgress(shift=6.0)" in comfy_server.log_tail(200_000)

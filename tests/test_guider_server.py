"""AIGGuider / AIGSampler through a real ComfyUI server: schema, workflows, /prompt errors, KSampler parity."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from aig_testkit.comfy import install_model
from aig_testkit.workflow_api import node_types, ui_to_api

pytestmark = pytest.mark.comfyui

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
QUEUE_EVALUATION = "5 Queue evaluation of the reward-diversity tradeoff.json"  # run by test_workflow_queue_eval.py
SCHEDULE = {"schedule": "power", "p": 2.0, "switch": 0.5, "centre": 0.5, "width": 0.1, "value": 1.0,
            "window_start": 0.0, "window_end": 1.0, "skip_tolerance": 0.0}


@pytest.fixture(scope="module")
def names(comfy_server, sd15_checkpoint, sd15_lora, tmp_path_factory):
    """Fixture files installed in the server's folders; returns their names."""
    bogus = tmp_path_factory.mktemp("bogus") / "aig_bogus_lora.safetensors"
    save_file({"lora_unet_nowhere_to_q.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_nowhere_to_q.lora_up.weight": torch.zeros(8, 4)}, str(bogus))
    return {
        "ckpt": install_model(comfy_server, "checkpoints", sd15_checkpoint),
        "ckpt_copy": install_model(comfy_server, "checkpoints", sd15_checkpoint, "aig_tiny_sd15_copy.safetensors"),
        "lora": install_model(comfy_server, "loras", sd15_lora),
        "bogus": install_model(comfy_server, "loras", bogus),
    }


@pytest.fixture(scope="module")
def info(comfy_server, names):
    return comfy_server.object_info()  # after install, so the loras list holds the fixtures


def _base_prompt(ckpt, seed=1, batch=1):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": batch}},
    }


def _aig_sampler(model, tuned=None, lora="None", seed=1, steps=4, **schedule):
    inputs = {"model": model, "lora_name": lora, "lora_strength": 0.8, "seed": seed, "steps": steps, "cfg": 5.0,
              "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
              "latent_image": ["4", 0], "denoise": 1.0, **SCHEDULE, **schedule}
    if tuned is not None:
        inputs["tuned_model"] = tuned
    return {"class_type": "AIGSampler", "inputs": inputs}


def _save_latent(node, prefix):
    return {"class_type": "SaveLatent", "inputs": {"samples": [node, 0], "filename_prefix": prefix}}


def _latent(server, entry, node_id) -> torch.Tensor:
    files = entry["outputs"][node_id]["latents"]
    return load_file(str(server.output_file(files[0])))["latent_tensor"]


def test_nodes_registered_with_tooltips(info):
    for node in ("AIGGuider", "AIGSampler"):
        assert node in info, f"{node} missing from /object_info"
        spec = info[node]
        assert spec["category"].startswith("AIG/")
        for section in ("required", "optional"):
            for name, config in spec["input"].get(section, {}).items():
                assert config[1].get("tooltip"), f"{node}.{name} has no tooltip"
    assert info["AIGGuider"]["output"] == ["GUIDER"]
    assert info["AIGSampler"]["output"] == ["LATENT"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_nodes_exist_and_convert(info, path):
    workflow = json.loads(path.read_text())
    missing = node_types(workflow) - set(info)
    assert not missing, f"{path.name} uses node types this ComfyUI lacks: {missing}"
    prompt = ui_to_api(workflow, info)
    assert {n["class_type"] for n in prompt.values()} == node_types(workflow)
    from comfy_aig.core.schedules import VALUE_NAMES, schedule_from_values

    aig = [n["inputs"] for n in prompt.values() if n["class_type"] in ("AIGSampler", "AIGGuider")]
    assert aig, f"{path.name} has no AIG sampling node"
    for inputs in aig:  # every shipped schedule is valid and its tuned model is a LoRA file or a MODEL link
        schedule_from_values({k: inputs[k] for k in VALUE_NAMES})
        assert (inputs["lora_name"] == "None") == ("tuned_model" in inputs)


def test_workflows_listed_as_templates(comfy_server):
    import requests

    templates = requests.get(f"{comfy_server.url}/workflow_templates", timeout=30).json()
    assert {p.stem for p in WORKFLOWS} <= set(templates.get("comfy_aig", [])), templates


@pytest.fixture(scope="module")
def reward_name(comfy_server):
    """A tiny PickScore directory in the server's reward_models folder (the shipped workflows score with one)."""
    from aig_testkit.reward_fixtures import build_pickscore_dir

    target = comfy_server.model_path("reward_models", "aig_workflow_pick")
    if not target.exists():
        build_pickscore_dir(target)
    return "aig_workflow_pick/"


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in WORKFLOWS if p.name != QUEUE_EVALUATION], ids=lambda p: p.name)
def test_workflow_runs(comfy_server, names, reward_name, path):
    """The converted workflow runs on the fixtures once model names, size and steps are made tiny."""
    prompt = ui_to_api(json.loads(path.read_text()), comfy_server.object_info())
    for node in prompt.values():
        inputs = node["inputs"]
        if "ckpt_name" in inputs:
            inputs["ckpt_name"] = names["ckpt"]
        if "model_name" in inputs:
            inputs["model_name"] = reward_name
        if inputs.get("lora_name", "None") != "None":
            inputs["lora_name"] = names["lora"]
        if node["class_type"] == "EmptyLatentImage":
            inputs.update(width=32, height=32, batch_size=1)
        if "steps" in inputs:
            inputs["steps"] = 3
        for key in ("seed", "noise_seed"):
            if key in inputs:
                inputs[key] = uuid.uuid4().int % 10**9  # defeat ComfyUI's result cache
    entry = comfy_server.run(prompt)
    images = [i for o in entry["outputs"].values() for i in o.get("images", [])]
    assert images and all(comfy_server.output_file(i).is_file() for i in images)  # saved images and previews


@pytest.mark.slow
def test_aig_sampler_endpoints_match_ksampler(comfy_server, names):
    """AIGSampler at g == 0 equals KSampler(base), at g == 1 equals KSampler(LoraLoaderModelOnly): bit for bit
    through weight hooks, to float rounding unmerged (the default for a plain LoRA; test_guider_bypass.py)."""
    seed = uuid.uuid4().int % 10**9
    prompt = _base_prompt(names["ckpt"])
    ksampler = {"seed": seed, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}
    prompt.update({
        "5": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": names["lora"],
                                                               "strength_model": 0.8}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], **ksampler}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["5", 0], **ksampler}},
        "8": _aig_sampler(["1", 0], lora=names["lora"], seed=seed, schedule="constant", value=0.0),
        "9": _aig_sampler(["1", 0], tuned=["5", 0], seed=seed, schedule="constant", value=1.0, lora_route="hooks"),
        "10": _aig_sampler(["1", 0], tuned=["5", 0], seed=seed, schedule="constant", value=1.0),
    })
    for node in ("6", "7", "8", "9", "10"):
        prompt[f"s{node}"] = _save_latent(node, f"aig_test/parity_{node}")
    entry = comfy_server.run(prompt)
    base, tuned = _latent(comfy_server, entry, "s6"), _latent(comfy_server, entry, "s7")
    assert (base - tuned).abs().max() > 1e-3
    assert torch.equal(_latent(comfy_server, entry, "s8"), base)
    assert torch.equal(_latent(comfy_server, entry, "s9"), tuned)
    unmerged = _latent(comfy_server, entry, "s10")
    assert not torch.equal(unmerged, base)
    assert (unmerged - tuned).abs().max() <= 2e-5 * tuned.abs().max()


@pytest.mark.slow
def test_aig_sampler_equals_guider_with_custom_sampler(comfy_server, names):
    """AIGSampler (p = 2) and AIGGuider + RandomNoise + BasicScheduler + SamplerCustomAdvanced agree bit for bit."""
    seed = uuid.uuid4().int % 10**9
    prompt = _guider_prompt(names)
    prompt["5"]["inputs"]["lora_strength"] = 0.8
    prompt["7"]["inputs"]["steps"] = 4
    prompt["8"]["inputs"]["noise_seed"] = seed
    prompt["11"] = _aig_sampler(["1", 0], lora=names["lora"], seed=seed)
    prompt["12"] = _save_latent("11", "aig_test/sampler")
    entry = comfy_server.run(prompt)
    guided, sampled = _latent(comfy_server, entry, "10"), _latent(comfy_server, entry, "12")
    assert torch.isfinite(sampled).all()
    assert torch.equal(guided, sampled)


def _guider_prompt(names, **overrides):
    prompt = _base_prompt(names["ckpt"])
    inputs = {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 5.0,
              "lora_name": names["lora"], "lora_strength": 1.0, **SCHEDULE}
    inputs.update(overrides)
    prompt["5"] = {"class_type": "AIGGuider", "inputs": inputs}
    prompt["6"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["7"] = {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 2,
                                                              "denoise": 1.0}}
    prompt["8"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": uuid.uuid4().int % 10**9}}
    prompt["9"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["8", 0], "guider": ["5", 0], "sampler": ["6", 0], "sigmas": ["7", 0], "latent_image": ["4", 0]}}
    prompt["10"] = _save_latent("9", "aig_test/guider")
    return prompt


def _rejected(server, prompt) -> str:
    response = server.submit(prompt)
    assert response.status_code == 400, response.text[:2000]
    return response.text


def _one_problem(server, prompt) -> dict:
    """The single validation error of a refused prompt."""
    errors = server.rejections(prompt)
    assert len(errors) == 1, errors
    return errors[0]


def test_window_start_after_end_stops_the_node(comfy_server, names):
    message = comfy_server.execution_error(_guider_prompt(names, window_start=0.8, window_end=0.3))
    assert "AIGGuider" in message and "window start (0.8) must be below window end (0.3)" in message


def test_non_positive_p_rejected_at_prompt(comfy_server, names):
    error = _one_problem(comfy_server, _guider_prompt(names, p=0.0))
    assert (error["type"], error["input"]) == ("value_smaller_than_min", "p")


def test_bad_tolerance_rejected_at_prompt(comfy_server, names):
    error = _one_problem(comfy_server, _guider_prompt(names, skip_tolerance=0.7))
    assert (error["type"], error["input"]) == ("value_bigger_than_max", "skip_tolerance")


def test_unknown_lora_route_rejected_at_prompt(comfy_server, names):
    error = _one_problem(comfy_server, _guider_prompt(names, lora_route="merged"))
    assert (error["type"], error["input"]) == ("value_not_in_list", "lora_route")
    assert "'merged' not in ['auto', 'bypass', 'hooks']" in error["details"]


def test_unknown_schedule_family_rejected_at_prompt(comfy_server, names):
    error = _one_problem(comfy_server, _guider_prompt(names, schedule="exponential"))
    assert (error["type"], error["input"]) == ("value_not_in_list", "schedule")


def test_no_tuned_model_rejected_at_prompt(comfy_server, names):
    error = _one_problem(comfy_server, _guider_prompt(names, lora_name="None"))
    assert error["input"] == "lora_name" and "exactly one tuned model" in error["details"]


def test_both_tuned_inputs_rejected_at_prompt(comfy_server, names):
    prompt = _guider_prompt(names)
    prompt["5"]["inputs"]["tuned_model"] = ["1", 0]
    errors = comfy_server.rejections(prompt)  # one problem, on the two inputs it concerns
    assert sorted(e["input"] for e in errors) == ["lora_name", "tuned_model"]
    assert all("exactly one tuned model" in e["details"] for e in errors)


def test_lora_matching_no_keys_is_a_node_error(comfy_server, names):
    message = comfy_server.execution_error(_guider_prompt(names, lora_name=names["bogus"]))
    assert "AIGGuider" in message and "matches none of the model's weights" in message


@pytest.mark.slow
def test_separate_checkpoint_route_runs(comfy_server, names):
    """A tuned MODEL from another loaded checkpoint (same architecture) runs through the separate-model route."""
    prompt = _guider_prompt(names, lora_name="None")
    prompt["11"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": names["ckpt_copy"]}}
    prompt["12"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["11", 0], "lora_name": names["lora"],
                                                                    "strength_model": 1.0}}
    prompt["5"]["inputs"]["tuned_model"] = ["12", 0]
    entry = comfy_server.run(prompt)
    assert torch.isfinite(_latent(comfy_server, entry, "10")).all()

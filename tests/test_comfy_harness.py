"""Foundation through a real ComfyUI: the pack loads, its first node runs via /prompt, the SD1.5 fixture samples.

Skipped (with the reason in the summary) unless COMFYUI_ROOT points at a ComfyUI checkout.
"""

import asyncio
import os

import numpy as np
import pytest
from PIL import Image

from aig_testkit.comfy import ComfyServer, install_model


def preview_prompt(steps=8, **overrides):
    inputs = {"schedule": "power", "p": 2.0, "switch": 0.5, "centre": 0.5, "width": 0.1, "value": 1.0,
              "window_start": 0.0, "window_end": 1.0, "steps": steps}
    inputs.update(overrides)
    return {"1": {"class_type": "AIGSchedulePreview", "inputs": inputs},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "aig_preview"}}}


def test_server_lifecycle_leaves_no_process(comfy_root, tmp_path):
    server = ComfyServer(comfy_root, tmp_path / "base").start()
    try:
        assert "AIGSchedulePreview" in server.object_info()
        pid = server.process.pid
    finally:
        server.stop()
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pack_nodes_are_registered(comfy_server):
    info = comfy_server.object_info()["AIGSchedulePreview"]
    assert info["category"] == "AIG/schedules"
    assert info["display_name"] == "AIG Schedule Preview"
    required = info["input"]["required"]
    assert required["schedule"][1]["options"] == ["power", "linear", "step", "sigmoid", "cosine", "constant"]
    for spec in (*required.values(), *info["input"].get("optional", {}).values()):
        assert spec[1].get("tooltip"), "every input needs a tooltip"


def test_schedule_preview_runs_through_prompt(comfy_server):
    entry = comfy_server.run(preview_prompt(steps=7))
    images = entry["outputs"]["2"]["images"]
    picture = np.asarray(Image.open(comfy_server.output_file(images[0])))
    assert picture.shape == (256, 256, 3)
    assert (np.abs(picture.astype(int) - [220, 60, 40]).sum(-1) < 30).sum() > 7 * 10  # 7 red step markers
    text = entry["outputs"]["1"]["text"][0]
    assert text.startswith("power(p=2): 0.000, 0.020, 0.082")


def test_bad_schedule_is_rejected_with_one_message_each(comfy_server):
    errors = comfy_server.rejections(preview_prompt(window_start=0.8, window_end=0.2))
    assert {e["input"] for e in errors} == {"window_start", "window_end"}
    assert all("window start (0.8) must be below window end (0.2)" in e["details"] for e in errors)
    for bad, kind in ((dict(schedule="exponential"), "value_not_in_list"), (dict(p=0.0), "value_smaller_than_min"),
                      (dict(steps=0), "value_smaller_than_min")):
        errors = comfy_server.rejections(preview_prompt(**bad))
        assert [(e["type"], e["input"]) for e in errors] == [(kind, *bad)], errors


def test_entrypoint_returns_extension(comfy_inprocess):
    from comfy_api.latest import ComfyExtension

    import comfy_aig

    extension = asyncio.run(comfy_aig.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    ids = [node.define_schema().node_id for node in asyncio.run(extension.get_node_list())]
    assert "AIGSchedulePreview" in ids and all(i.startswith("AIG") for i in ids)


@pytest.mark.slow
def test_sd15_fixture_is_detected_as_sd15(comfy_inprocess, sd15_checkpoint):
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(sd15_checkpoint), output_vae=True, output_clip=True)
    assert type(model.model.model_config).__name__ == "SD15"
    assert clip is not None and vae is not None


@pytest.mark.slow
def test_sd15_fixture_samples_to_an_image(comfy_server, sd15_checkpoint):
    name = install_model(comfy_server, "checkpoints", sd15_checkpoint)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "aig_sd15"}},
    }
    entry = comfy_server.run(prompt)
    picture = np.asarray(Image.open(comfy_server.output_file(entry["outputs"]["7"]["images"][0])))
    assert picture.shape == (64, 64, 3)
    assert "SD15" in comfy_server.log_tail(200000) or "model_type EPS" in comfy_server.log_tail(200000)

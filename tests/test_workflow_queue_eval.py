"""The queue-evaluation example workflow through a real ComfyUI: converted from its UI file, run for the 'base'
label and one AIG label over several queued prompts, then the report's JSON, CSV and plot are checked."""

from __future__ import annotations

import csv
import json
import math
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from aig_testkit.comfy import install_model
from aig_testkit.reward_fixtures import build_pickscore_dir
from aig_testkit.workflow_api import node_types, ui_to_api
from comfy_aig.core import evalset

pytestmark = pytest.mark.comfyui

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
WORKFLOW = WORKFLOWS / "5 Queue evaluation of the reward-diversity tradeoff.json"
PROMPT_FILE = WORKFLOWS / "aig_prompts_example.txt"
REWARD_DIR = "aig_queue_wf_pick"
METRICS = ("scd", "log_scd", "fid", "precision", "recall", "vendi", "reward_mean")


def load_workflow() -> dict:
    return json.loads(WORKFLOW.read_text(encoding="utf-8"))


def by_type(prompt: dict, class_type: str) -> tuple[str, dict]:
    """(node id, inputs) of the one node of this type in an API prompt."""
    (found,) = [(key, node["inputs"]) for key, node in prompt.items() if node["class_type"] == class_type]
    return found


@pytest.fixture(scope="module")
def server(comfy_server, sd15_checkpoint, sd15_lora):
    """Session server with the tiny checkpoint, LoRA, PickScore dir and the example prompt file installed."""
    names = {"ckpt": install_model(comfy_server, "checkpoints", sd15_checkpoint),
             "lora": install_model(comfy_server, "loras", sd15_lora)}
    target = comfy_server.model_path("reward_models", REWARD_DIR)
    if not target.exists():
        build_pickscore_dir(target)
    inputs = comfy_server.base_dir / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROMPT_FILE, inputs / PROMPT_FILE.name)
    return comfy_server, names, comfy_server.object_info()  # object_info after install: combos list the files


def test_example_prompt_file_parses_to_eight_prompts():
    prompts = evalset.read_prompt_list(PROMPT_FILE)
    assert len(prompts) == 8 and len(set(prompts)) == 8
    assert not any(p.startswith("#") for p in prompts)


def test_workflow_wiring_and_shipped_base_state(server):
    """Converted prompt: prompt and seed come from the list, the report follows the collect, defaults are 'base'."""
    _, _, info = server
    workflow = load_workflow()
    assert not node_types(workflow) - set(info)
    ui_nodes = {n["type"]: n for n in workflow["nodes"]}
    assert ui_nodes["AIGPromptList"]["widgets_values"][1:] == [0, "increment"]
    note = ui_nodes["Note"]["widgets_values"][0]
    assert all(word in note for word in ("base", "Queue (N)", PROMPT_FILE.name, "aig:p=2", "lora:0.5"))

    prompt = ui_to_api(workflow, info)
    plist, plist_inputs = by_type(prompt, "AIGPromptList")
    assert plist_inputs["prompt_file"] == PROMPT_FILE.name
    _, sampler = by_type(prompt, "AIGSampler")
    collect_id, collect = by_type(prompt, "AIGEvalCollect")
    _, report = by_type(prompt, "AIGEvalReport")
    _, features = by_type(prompt, "AIGImageFeatures")
    encoders = [n["inputs"] for n in prompt.values() if n["class_type"] == "CLIPTextEncode"]
    assert [plist, 0] in [e["text"] for e in encoders]
    assert sampler["seed"] == collect["seed"] == [plist, 1]  # seed = prompt line: labels pair run by run
    assert collect["prompt"] == [plist, 0]
    assert report["set_name"] == [collect_id, 0] and report["reference_label"] == "base"
    assert collect["reward_model"] == features["reward_model"] and collect["images"] == features["image"]
    assert (collect["label"], sampler["schedule"], sampler["value"]) == ("base", "constant", 0.0)


def test_prompt_file_does_not_enter_the_template_list(server):
    comfy, _, _ = server
    templates = requests.get(f"{comfy.url}/workflow_templates", timeout=30).json()
    listed = templates.get("comfy_aig", [])
    assert WORKFLOW.stem in listed
    assert PROMPT_FILE.stem not in listed


def tiny_prompt(info: dict, names: dict, set_name: str) -> dict:
    """The workflow as API prompt with the fixtures, 64x64, 4 steps, 3 images per prompt."""
    prompt = ui_to_api(load_workflow(), info)
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = names["ckpt"]
        elif kind == "AIGSampler":
            inputs.update(lora_name=names["lora"], steps=4)
        elif kind == "EmptyLatentImage":
            inputs.update(width=64, height=64, batch_size=3)
        elif kind == "AIGRewardModelLoader":
            inputs["model_name"] = f"{REWARD_DIR}/"
        elif kind == "AIGEvalCollect":
            inputs["set_name"] = set_name
        elif kind == "AIGEvalReport":
            inputs["k"] = 3  # 2 prompts x 3 images = 6 per label >= k + 1
    return prompt


def queue_label(comfy, prompt: dict, indices, label: str, **sampler) -> dict:
    """Queue one run per prompt index under a label (as 'increment' does); returns the last history entry."""
    plist, _ = by_type(prompt, "AIGPromptList")
    _, collect = by_type(prompt, "AIGEvalCollect")
    _, sampler_inputs = by_type(prompt, "AIGSampler")
    collect["label"] = label
    sampler_inputs.update(sampler)
    entry = None
    for index in indices:
        prompt[plist]["inputs"]["index"] = index
        entry = comfy.run(prompt)
    return entry


@pytest.mark.slow
def test_queue_base_then_aig_label_writes_the_report(server):
    comfy, names, info = server
    set_name = f"wf_{uuid.uuid4().hex[:8]}"
    prompt = tiny_prompt(info, names, set_name)
    queue_label(comfy, prompt, [0, 1], "base")  # the shipped state: constant 0 = base model
    # the AIG label starts elsewhere in the list: indices 9, 8 wrap to lines 1, 0, so prompts and seeds still pair
    entry = queue_label(comfy, prompt, [9, 8], "aig:p=2", schedule="power", p=2.0)

    store = evalset.EvalSet(comfy.base_dir / "output" / "aig_eval", set_name)
    groups = store.by_label()
    assert set(groups) == {"base", "aig:p=2"}
    lines = evalset.read_prompt_list(PROMPT_FILE)
    assert sorted(groups["base"].keys) == sorted(groups["aig:p=2"].keys)
    assert {(p, s) for p, s, _ in groups["base"].keys} == {(lines[i], i) for i in range(2)}
    base = dict(zip(groups["base"].keys, groups["base"].features))
    aig = dict(zip(groups["aig:p=2"].keys, groups["aig:p=2"].features))
    assert all(not np.allclose(base[key], aig[key]) for key in base)  # the tuned setting changed the images

    report_id, _ = by_type(prompt, "AIGEvalReport")
    (image_info,) = entry["outputs"][report_id]["images"]
    assert comfy.output_file(image_info).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = store.path
    report = json.loads((folder / "report_base.json").read_text())
    assert report["reference"] == "base" and report["set"] == set_name
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ["base", "aig:p=2"]  # reference first, then one row per other label
    tuned = rows["aig:p=2"]
    assert tuned["n"] == tuned["n_paired"] == 6 and tuned["runs"] == 2 and not tuned["note"]
    for key in METRICS:
        assert tuned[key] is not None and math.isfinite(tuned[key]), key
    assert rows["base"]["scd"] == pytest.approx(0.0, abs=1e-9)  # reference against itself
    with open(folder / "report_base.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [r["label"] for r in csv_rows] == ["base", "aig:p=2"]
    assert float(csv_rows[1]["scd"]) == pytest.approx(tuned["scd"])

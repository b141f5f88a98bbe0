"""Evaluation nodes through a real ComfyUI: prompt list -> features -> collect over queued runs -> report."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import torch

from aig_testkit.comfy import ComfyServer
from aig_testkit.reward_fixtures import build_pickscore_dir
from comfy_aig.core import evalreport, evalset

pytestmark = pytest.mark.comfyui

PROMPTS = "a red circle\n# comment line\na blue square\na green triangle\n"
REWARD_DIR = "tiny_pick"


@pytest.fixture(scope="module")
def server(comfy_server, tmp_path_factory):
    """The session server with a prompt list in input/ and a tiny PickScore directory in reward_models/."""
    prompt_file = comfy_server.base_dir / "input" / "aig_eval_prompts.txt"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(PROMPTS, encoding="utf-8")
    target = comfy_server.model_path("reward_models", REWARD_DIR)
    if not target.exists():
        build_pickscore_dir(target)
    return comfy_server


def workflow(set_name, label, index, noise_seed, strength, reward=True, batch=6, k=3, x_metric="vendi"):
    """API-format prompt: noisy grey images -> features -> collect (with rewards) -> report."""
    nodes = {
        "1": {"class_type": "AIGPromptList", "inputs": {"prompt_file": "aig_eval_prompts.txt", "index": index}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": batch,
                                                      "color": 0x808080}},
        "3": {"class_type": "ImageAddNoise", "inputs": {"image": ["2", 0], "seed": noise_seed,
                                                        "strength": strength}},
        "5": {"class_type": "AIGImageFeatures", "inputs": {"image": ["3", 0], "source": "pixels", "pixel_size": 4}},
        "6": {"class_type": "AIGEvalCollect", "inputs": {"features": ["5", 0], "set_name": set_name,
                                                         "label": label, "prompt": ["1", 0], "seed": noise_seed}},
        "7": {"class_type": "AIGEvalReport", "inputs": {"set_name": ["6", 0], "reference_label": "base", "k": k,
                                                        "x_metric": x_metric}},
    }
    if reward:
        nodes["4"] = {"class_type": "AIGRewardModelLoader", "inputs": {"model_name": f"{REWARD_DIR}/", "kind": "pickscore",
                                                                       "device": "cpu", "dtype": "fp32"}}
        nodes["5"]["inputs"].update(source="connected model", reward_model=["4", 0])
        nodes["6"]["inputs"].update(images=["3", 0], reward_model=["4", 0])
    return nodes


def set_dir(server, name):
    return server.base_dir / "output" / "aig_eval" / name


@pytest.mark.slow
def test_queue_collects_every_run_and_reports_all_labels(server):
    runs = [("base", 0.6), ("lora:1.0", 0.05), ("aig:p=2", 0.3)]
    entries = []
    for label, strength in runs:
        for index in range(2):  # two prompts per label, same seeds across labels
            entries.append(server.run(workflow("queue", label, index, 100 + index, strength)))
    store = evalset.EvalSet(server.base_dir / "output" / "aig_eval", "queue")
    records = store.records()
    assert len(records) == 6
    assert [r.prompts[0] for r in records[:2]] == ["a red circle", "a blue square"]
    assert all(r.scores is not None and r.features.shape == (6, 16) for r in records)
    assert {r.feature_source for r in records} == {"reward:pickscore:16"}

    last = entries[-1]["outputs"]
    assert "6 runs so far" in last["6"]["text"][0]
    (image_info,) = last["7"]["images"]
    png = server.output_file(image_info)
    assert png.read_bytes()[:4] == b"\x89PNG"
    report = json.loads((set_dir(server, "queue") / "report_base.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["base", "lora:1.0", "aig:p=2"]
    expected = evalreport.evaluate_labels(store.by_label(), "base", k=3)
    for got, want in zip(report["rows"], expected):
        for key in ("scd", "fid", "recall", "vendi", "reward_mean", "n_paired"):
            assert got[key] == pytest.approx(want[key], rel=1e-9), key
    assert report["rows"][1]["n_paired"] == 12
    assert (set_dir(server, "queue") / "report_base.csv").read_text().startswith("label,")


def test_identical_queued_prompts_are_each_collected(server):
    prompt = workflow("cache", "base", 0, 5, 0.5, reward=False)
    for _ in range(3):
        server.run(prompt)  # same inputs every time: ComfyUI would cache a plain output node
    store = evalset.EvalSet(server.base_dir / "output" / "aig_eval", "cache")
    assert len(store.record_paths()) == 3
    report = json.loads((set_dir(server, "cache") / "report_base.json").read_text())
    assert report["rows"][0]["n"] == 18  # the report re-ran after every collect


def test_bad_set_name_is_rejected_at_queue_time(server):
    response = server.submit(workflow("../escape", "base", 0, 1, 0.5, reward=False))
    assert response.status_code == 400
    assert "plain folder name" in response.text


def test_report_without_reference_names_the_labels(server):
    prompt = workflow("noref", "tuned", 0, 9, 0.5, reward=False)
    message = server.execution_error(prompt)
    assert "reference label 'base'" in message and "tuned" in message


@pytest.mark.slow
def test_killed_comfyui_keeps_every_completed_run(comfy_root, tmp_path):
    """SIGKILL ComfyUI in the middle of a queue; a restarted server keeps collecting into the same set."""
    base = tmp_path / "crash_base"
    (base / "input").mkdir(parents=True)
    (base / "input" / "aig_eval_prompts.txt").write_text(PROMPTS, encoding="utf-8")
    folder = base / "output" / "aig_eval" / "crash"
    first = ComfyServer(comfy_root, base).start()
    try:
        for i in range(30):  # queue without waiting, then kill while the queue runs
            assert first.submit(workflow("crash", "base", i, 1000 + i, 0.5, reward=False, batch=4)).ok
        deadline = time.monotonic() + 120
        while len(list(folder.glob("run-*.safetensors"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=30)
    finally:
        first.stop()
    completed = len(list(folder.glob("run-*.safetensors")))
    assert 3 <= completed < 30
    second = ComfyServer(comfy_root, base).start()
    try:
        second.run(workflow("crash", "base", 99, 2000, 0.5, reward=False, batch=4))
    finally:
        second.stop()
    records = evalset.EvalSet(base / "output" / "aig_eval", "crash").records()
    assert len(records) == completed + 1  # every run completed before the kill, plus the new one
    assert all(np.isfinite(r.features).all() and r.features.shape == (4, 48) for r in records)


def noisy_features(node_id, seed, strength, source_inputs):
    """Three nodes: 6 noisy grey images -> AIGImageFeatures with the given source inputs."""
    return {
        f"{node_id}a": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 6,
                                                                "color": 0x808080}},
        f"{node_id}b": {"class_type": "ImageAddNoise", "inputs": {"image": [f"{node_id}a", 0], "seed": seed,
                                                                  "strength": strength}},
        node_id: {"class_type": "AIGImageFeatures", "inputs": {"image": [f"{node_id}b", 0], **source_inputs}},
    }


def test_diversity_node_in_a_workflow(server):
    pixels = {"source": "pixels", "pixel_size": 4}
    prompt = {**noisy_features("10", 1, 0.6, pixels), **noisy_features("20", 2, 0.1, pixels),
              "30": {"class_type": "AIGDiversity", "inputs": {"features": ["20", 0], "reference": ["10", 0], "k": 3}}}
    text = server.run(prompt)["outputs"]["30"]["text"][0]
    values = dict(line.split(": ") for line in text.splitlines())
    assert float(values["scd"]) > 0 and float(values["vendi"]) < float(values["vendi_ref"])
    assert 0 <= float(values["recall"]) < 1


def test_prompt_list_wraps_around_with_a_pass_counter(server):
    server.run(workflow("wrap", "base", 4, 7, 0.5, reward=False))  # 3 prompts: index 4 -> line 1, pass 1
    (record,) = evalset.EvalSet(server.base_dir / "output" / "aig_eval", "wrap").records()
    assert record.prompts[0] == "a blue square"


@pytest.mark.slow
def test_inception_loader_and_features_in_a_workflow(server):
    from safetensors.torch import save_file

    from comfy_aig.core.features import FEATURE_DIM, build_fid_inception

    target = server.model_path("inception", "pt_inception_random.safetensors")
    if not target.exists():
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in build_fid_inception().state_dict().items()}, str(target))
    assert "pt_inception_random.safetensors" in str(server.object_info()["AIGInceptionLoader"]["input"])
    prompt = {"1": {"class_type": "AIGInceptionLoader", "inputs": {"weights": "pt_inception_random.safetensors"}},
              **noisy_features("10", 3, 0.5, {"source": "connected model", "pixel_size": 16, "inception": ["1", 0]}),
              "20": {"class_type": "AIGEvalCollect", "inputs": {"features": ["10", 0], "set_name": "inception",
                                                                "label": "base", "prompt": "p", "seed": 3}}}
    server.run(prompt)
    (record,) = evalset.EvalSet(server.base_dir / "output" / "aig_eval", "inception").records()
    assert record.features.shape == (6, FEATURE_DIM) and record.feature_source == f"inception:pool3:{FEATURE_DIM}"


def rejected_nodes(response) -> dict:
    """node_errors of a /prompt answer (400 when no output survives, 200 with errors when another output does)."""
    body = response.json()
    return body.get("node_errors", {}) if response.status_code in (200, 400) else {"status": response.status_code}


def test_widget_ranges_and_combos_are_still_validated(server):
    bad_metric = workflow("valid", "base", 0, 1, 0.5, reward=False)
    bad_metric["7"]["inputs"]["x_metric"] = "not_a_metric"
    errors = rejected_nodes(server.submit(bad_metric))
    assert "not one of" in json.dumps(errors["7"])
    bad_k = workflow("valid", "base", 0, 1, 0.5, reward=False, k=0)
    assert "smaller than min" in json.dumps(rejected_nodes(server.submit(bad_k))["7"])
    bad_source = workflow("valid", "base", 0, 1, 0.5, reward=False)
    bad_source["5"]["inputs"]["source"] = "magic"
    response = server.submit(bad_source)
    assert response.status_code == 400 and "not one of" in response.text

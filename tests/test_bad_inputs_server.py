"""Bad input through a real ComfyUI server (COMFYUI_ROOT), as a careless user or an attacker would send it.

Each case asserts the message ComfyUI shows (one plain line naming the problem and the fix) and, where a
name points outside the pack's folders, that nothing there was read (access times of planted files and
folders stay as set) or written (the outside tree is unchanged).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from aig_testkit import bad_files
from aig_testkit.comfy import install_model
from aig_testkit.reward_fixtures import build_hps_file, build_pickscore_dir

pytestmark = pytest.mark.comfyui
OLD_ATIME = 1_000_000  # 1970-01-12: any read of a file or listing of a folder sets a newer access time


class Planted:
    """Every file and folder under root with an access time far before its modification time."""

    def __init__(self, root: Path):
        self.root = root
        self.paths = [root, *root.rglob("*")]  # listed once, here: later checks only stat
        for path in self.paths:
            os.utime(path, (OLD_ATIME, path.stat().st_mtime), follow_symlinks=False)

    def touched(self) -> list[str]:
        """Files read and folders listed since planting."""
        return sorted(str(p.relative_to(self.root)) for p in self.paths if p.stat().st_atime > OLD_ATIME)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def outside(comfy_server, tmp_path_factory):
    """A folder outside every ComfyUI folder holding a valid reward model, a secret config and prompt lists."""
    root = tmp_path_factory.mktemp("outside_the_folders")
    build_pickscore_dir(root / "stolen_model")
    secret = root / "secret_dir"
    secret.mkdir()
    (secret / "config.json").write_text('{"model_type": "secret_model_type"}')
    (root / "secret_prompts.txt").write_text("a secret prompt\n")
    links = comfy_server.base_dir / "models" / "reward_models"
    links.mkdir(parents=True, exist_ok=True)
    for name, target in (("link_out", root / "stolen_model"), ("link_out.pt", root / "secret_prompts.txt")):
        if not (links / name).exists():
            (links / name).symlink_to(target)
    inputs = comfy_server.base_dir / "input"
    (inputs / "loops" / "a").mkdir(parents=True, exist_ok=True)
    for link, target in ((inputs / "loops" / "a" / "up", inputs / "loops"),
                         (inputs / "loops" / "self", inputs / "loops"),
                         (inputs / "loops" / "out", root)):
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    (inputs / "loops" / "a" / "inside.txt").write_text("a prompt\n")
    if not (inputs / "leak.txt").exists():
        (inputs / "leak.txt").symlink_to(root / "secret_prompts.txt")
    bad_files.text_file(inputs / "latin1.txt", bad_files.NOT_UTF8)
    return root


@pytest.fixture(scope="module")
def reward_files(comfy_server, tmp_path_factory):
    """Broken reward models inside models/reward_models."""
    src = tmp_path_factory.mktemp("bad_rewards")
    hps = build_hps_file(src / "hps_good.pt", sidecar=True)
    st = src / "hps_cut.safetensors"
    from safetensors.torch import save_file

    save_file(torch.load(str(hps), weights_only=True)["state_dict"], str(st))
    install_model(comfy_server, "reward_models", bad_files.truncated(st, src / "hps_truncated.safetensors"))
    install_model(comfy_server, "reward_models", bad_files.pickle_of(src / "bare_tensor.pt", torch.zeros(3)))
    install_model(comfy_server, "reward_models", bad_files.pickle_of(src / "a_list.pt", [torch.zeros(3)]))
    bad_json = comfy_server.model_path("reward_models", "bad_json_clip")
    if not bad_json.exists():
        build_pickscore_dir(bad_json)
        (bad_json / "config.json").write_bytes(bad_files.NOT_JSON)
    cut_weights = comfy_server.model_path("reward_models", "cut_weights_clip")
    if not cut_weights.exists():
        build_pickscore_dir(cut_weights)
        bad_files.truncated(cut_weights / "model.safetensors", cut_weights / "model.safetensors", keep=0.3)
    install_model(comfy_server, "reward_models", hps, "hps_ok.pt")
    install_model(comfy_server, "reward_models", hps.with_suffix(".json"), "hps_ok.json")
    return comfy_server


def loader(name, **overrides) -> dict:
    inputs = {"model_name": name, "kind": "auto", "device": "cpu", "dtype": "fp32", **overrides}
    return {"class_type": "AIGRewardModelLoader", "inputs": inputs}


def score_graph(name, **overrides) -> dict:
    return {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
        "m": loader(name, **overrides),
        "s": {"class_type": "AIGScoreImages", "inputs": {"reward_model": ["m", 0], "images": ["img", 0],
                                                         "prompt": "x", "prompt_per_line": False, "chunk_size": 4}},
    }


def rejected(server, prompt) -> list[str]:
    """The details of every /prompt validation error (the prompt must be refused)."""
    response = server.submit(prompt)
    assert response.status_code == 400, response.text[:2000]
    errors = [e for node in response.json()["node_errors"].values() for e in node["errors"]]
    return [e["details"] for e in errors]


def one_plain_line(message: str) -> str:
    assert "\x1b" not in message and "Traceback" not in message and "\n" not in message.strip(), message
    return message


def test_planted_access_times_do_record_reads(outside):
    """The oracle of 'nothing outside was read' works on this file system (relatime or strictatime)."""
    planted = Planted(outside)
    (outside / "secret_prompts.txt").read_text()
    os.listdir(outside / "secret_dir")
    assert planted.touched() == ["secret_dir", "secret_prompts.txt"]


@pytest.mark.parametrize("name", ["../../../outside_the_folders0/stolen_model/", "{outside}/stolen_model/",
                                  "{outside}/secret_dir/", "../../no_such_folder/", "link_out/", "link_out.pt"])
def test_reward_model_names_outside_the_folder_are_refused_unread(comfy_server, outside, name):
    name = name.format(outside=outside)
    before = tree(outside)
    planted = Planted(outside)
    details = rejected(comfy_server, score_graph(name))
    assert len(details) == 1  # one message, on model_name
    message = one_plain_line(details[0])
    assert message.startswith("model_name - reward model")
    assert "secret_model_type" not in message and "clip" not in message.lower()
    assert str(outside) not in message.replace(name, "").replace(name.rstrip("/"), "")
    assert ("leads outside models/reward_models" in message) == name.startswith("link_out")
    assert planted.touched() == [] and tree(outside) == before


def test_refusals_do_not_reveal_what_exists_outside(comfy_server, outside):
    def words(name):
        return rejected(comfy_server, score_graph(name))[0].replace(name.rstrip("/"), "NAME")

    assert words(f"{outside}/stolen_model/") == words(f"{outside}/nothing_here/")
    assert words("../../../outside_the_folders0/secret_dir/") == words("../../../outside_the_folders0/none/")


def test_listings_survive_link_loops_and_hide_links_out(comfy_server, outside):
    planted = Planted(outside)
    started = time.monotonic()
    info = comfy_server.object_info()  # two link loops under input/: must answer, not hang
    assert time.monotonic() - started < 60
    prompt_files = info["AIGPromptList"]["input"]["required"]["prompt_file"][1]["options"]
    assert "loops/a/inside.txt" in prompt_files and "latin1.txt" in prompt_files
    assert not [f for f in prompt_files if "secret" in f or f.startswith("loops/out") or f == "leak.txt"]
    models = info["AIGRewardModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert "link_out/" not in models and "link_out.pt" not in models
    assert planted.touched() == []


@pytest.mark.parametrize("name", ["leak.txt", "../../outside_the_folders0/secret_prompts.txt", "/etc/hostname",
                                  "loops/out/secret_prompts.txt"])
def test_prompt_files_outside_the_input_folder_are_refused(comfy_server, outside, name):
    planted = Planted(outside)
    prompt = {"p": {"class_type": "AIGPromptList", "inputs": {"prompt_file": name, "index": 0}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}}}
    (message,) = rejected(comfy_server, prompt)
    assert one_plain_line(message).startswith("prompt_file - prompt list")
    assert "secret" not in message.replace(name, "")
    assert planted.touched() == []


def test_prompt_file_not_utf8_names_the_file(comfy_server, outside):
    prompt = {"p": {"class_type": "AIGPromptList", "inputs": {"prompt_file": "latin1.txt", "index": 0}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}}}
    message = comfy_server.execution_error(prompt)
    assert "FileLoadError: latin1.txt is not UTF-8 text (byte 3 is 0xe9)" in one_plain_line(message)


@pytest.mark.parametrize("name, expected", [
    ("hps_truncated.safetensors", "FileLoadError: hps_truncated.safetensors is not a readable safetensors file"),
    ("bare_tensor.pt", "FileLoadError: bare_tensor.pt holds a Tensor, but reward model weights"),
    ("a_list.pt", "FileLoadError: a_list.pt holds a list, but reward model weights"),
    ("bad_json_clip/", "FileLoadError: config.json is not valid JSON (line 1, column"),
    ("cut_weights_clip/", "FileLoadError: could not load a transformers CLIP model from cut_weights_clip/ ("),
])
def test_broken_reward_files_name_the_file(reward_files, name, expected):
    message = reward_files.execution_error(score_graph(name))
    assert expected in one_plain_line(message)


@pytest.mark.parametrize("field, value", [("dtype", "fp8"), ("kind", "imagereward"), ("device", "cuda:7")])
def test_bad_loader_choices_are_named(reward_files, field, value):
    errors = reward_files.rejections(score_graph("hps_ok.pt", **{field: value}))
    assert [(e["type"], e["input"]) for e in errors] == [("value_not_in_list", field)], errors
    assert f"{field}: '{value}' not in [" in one_plain_line(errors[0]["details"])


@pytest.fixture(scope="module")
def loras(comfy_server, sd15_checkpoint, sd15_lora, tmp_path_factory):
    """The SD1.5 fixture and broken LoRAs made from its good LoRA, installed in the server's folders."""
    src = tmp_path_factory.mktemp("bad_loras")
    made = {
        "wrong": bad_files.lora_with_wrong_widths(sd15_lora, src / "aig_wrong_width.safetensors", layers=5),
        "nan": bad_files.lora_with_nan(sd15_lora, src / "aig_nan.safetensors"),
        "cut": bad_files.truncated(sd15_lora, src / "aig_cut.safetensors"),
        "extra": bad_files.lora_with_extra_layers(sd15_lora, src / "aig_extra.safetensors"),
    }
    names = {key: install_model(comfy_server, "loras", path) for key, path in made.items()}
    names["ckpt"] = install_model(comfy_server, "checkpoints", sd15_checkpoint)
    return names


def sampler_graph(ckpt, lora="None", tuned=None, route="auto", seed=3) -> dict:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "5": {"class_type": "AIGSampler", "inputs": {
            "model": ["1", 0], "lora_name": lora, "lora_strength": 0.8, "seed": seed, "steps": 2, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0, "schedule": "power", "p": 2.0, "switch": 0.5, "centre": 0.5,
            "width": 0.1, "value": 1.0, "window_start": 0.0, "window_end": 1.0, "lora_route": route}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "aig_bad_input"}},
    }
    if tuned is not None:
        graph["t"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": tuned,
                                                                    "strength_model": 0.8}}
        graph["5"]["inputs"]["tuned_model"] = ["t", 0]
    return graph


@pytest.mark.parametrize("route", ["auto", "bypass", "hooks"])
def test_lora_of_the_wrong_widths_stops_on_every_route_and_input(comfy_server, loras, route):
    for graph, what in ((sampler_graph(loras["ckpt"], lora=loras["wrong"], route=route), "LoRA file"),
                        (sampler_graph(loras["ckpt"], tuned=loras["wrong"], route=route), "LoRA on base")):
        message = one_plain_line(comfy_server.execution_error(graph))
        assert f"AIGError: {what}: 5 of 32 LoRA layers cannot be applied to this model (e.g. diffusion_model." in message


@pytest.mark.parametrize("key, expected", [
    ("nan", "LoRA file: 1 of 32 LoRA layers cannot be applied to this model (e.g. "),
    ("cut", "FileLoadError: aig_cut.safetensors is not a readable safetensors file"),
    ("extra", "AIGError: LoRA 'aig_extra.safetensors': 1 of its diffusion-model layers match no layer"),
])
def test_broken_lora_files_stop_with_their_reason(comfy_server, loras, key, expected):
    message = one_plain_line(comfy_server.execution_error(sampler_graph(loras["ckpt"], lora=loras[key])))
    assert expected in message
    if key == "nan":
        assert "NaN or inf" in message


def test_lora_names_outside_the_folder_are_refused(comfy_server, loras, outside):
    planted = Planted(outside)
    for name in ("../../outside_the_folders0/x.safetensors", f"{outside}/x.safetensors"):
        errors = comfy_server.rejections(sampler_graph(loras["ckpt"], lora=name))  # refused at /prompt now
        assert [e["input"] for e in errors] == ["lora_name"], errors
        assert "LoRA" in errors[0]["details"] and "Pick one from the list" in one_plain_line(errors[0]["details"])
    assert planted.touched() == []


def collect_graph(set_name, label, seed=0, reference="base", reward=None) -> dict:
    graph = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 4, "color": 0x808080}},
        "noisy": {"class_type": "ImageAddNoise", "inputs": {"image": ["img", 0], "seed": seed, "strength": 0.5}},
        "f": {"class_type": "AIGImageFeatures", "inputs": {"image": ["noisy", 0], "source": "pixels", "pixel_size": 2}},
        "c": {"class_type": "AIGEvalCollect", "inputs": {"features": ["f", 0], "set_name": set_name, "label": label,
                                                        "prompt": "p", "seed": seed}},
        "r": {"class_type": "AIGEvalReport", "inputs": {"set_name": ["c", 0], "reference_label": reference, "k": 2,
                                                       "x_metric": "scd"}},
    }
    if reward is not None:
        graph["m"] = loader(reward)
        graph["c"]["inputs"].update(images=["noisy", 0], reward_model=["m", 0])
    return graph


@pytest.mark.parametrize("set_name", ["eval\n", "../escape", "/tmp/escape", ".hidden", "a/b"])
def test_bad_set_names_are_refused_at_prompt_time(comfy_server, set_name):
    details = rejected(comfy_server, collect_graph(set_name, "base"))
    assert len(details) == 1 and "is not a plain folder name" in one_plain_line(details[0])
    assert not (comfy_server.base_dir / "escape").exists() and not Path("/tmp/escape").exists()


def test_set_folder_linked_outside_is_refused_and_nothing_written(comfy_server, outside):
    eval_root = comfy_server.base_dir / "output" / "aig_eval"
    eval_root.mkdir(parents=True, exist_ok=True)
    if not (eval_root / "linked_set").exists():
        (eval_root / "linked_set").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    message = one_plain_line(comfy_server.execution_error(collect_graph("linked_set", "base")))
    assert "UnsafeNameError: evaluation set 'linked_set' would leave output/aig_eval" in message
    assert tree(outside) == before


def test_any_label_text_reaches_the_report(reward_files):
    """Labels that matplotlib would read as markup, or that hide legend entries, are reported as written."""
    comfy_server = reward_files
    labels = ["base", "$x$", "cost $5", "_hidden", "a_b^c", "../../x"]
    for seed in range(2):
        for label in labels:
            entry = comfy_server.run(collect_graph("nasty_labels", label, seed=seed, reward="hps_ok.pt"))
    summary = entry["outputs"]["r"]["text"][0]
    assert summary.splitlines()[0] == "label | n | reward | scd | recall"  # no repeated column
    assert [line.split(" | ")[0] for line in summary.splitlines()[1:]] == labels
    (png,) = entry["outputs"]["r"]["images"]
    assert comfy_server.output_file(png).read_bytes()[:4] == b"\x89PNG"
    dollar = one_plain_line(comfy_server.run(collect_graph("nasty_labels", "base", seed=9, reference="$x$",
                                                           reward="hps_ok.pt"))
                            ["outputs"]["r"]["images"][0]["filename"])
    assert dollar == "report_%24x%24.png"

"""Reward nodes through a real ComfyUI (COMFYUI_ROOT): loader listing, scoring parity, ranking, errors.

Images come from ComfyUI's EmptyImage (solid colours), so the in-process library can score the very same
pixels; the node must report those scores and rank the colours in the same order.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from aig_testkit.comfy import install_model
from aig_testkit.reward_fixtures import build_aesthetic_head, build_hps_file, build_pickscore_dir
from comfy_aig.core.rewards import load_reward_model

pytestmark = pytest.mark.comfyui

COLOURS = [0xE03020, 0x20C040, 0xF0E010]  # red, green, yellow
PICK_DIR, HPS_FILE = "PickScore_tiny/", "HPS_v2.1_tiny.pt"


@pytest.fixture(scope="module")
def rewards_installed(comfy_server, tmp_path_factory):
    """A PickScore-layout directory, an aesthetic directory and an HPS .pt (+ sidecar) in models/reward_models."""
    src = tmp_path_factory.mktemp("reward_src")
    pick = build_pickscore_dir(comfy_server.model_path("reward_models", "PickScore_tiny"))
    aesthetic = build_pickscore_dir(comfy_server.model_path("reward_models", "nested/clip-aesthetic"), seed=1)
    build_aesthetic_head(aesthetic / "sac+logos+ava1-l14-linearMSE.pth")
    hps = build_hps_file(src / HPS_FILE, sidecar=True)
    install_model(comfy_server, "reward_models", hps)
    install_model(comfy_server, "reward_models", hps.with_suffix(".json"))
    return {"pick": pick, "aesthetic": aesthetic, "hps": hps}


def solid_batch(colours, size=64) -> torch.Tensor:
    """ComfyUI EmptyImage pixels [B, H, W, 3] for the colours."""
    rgb = torch.tensor([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in colours], dtype=torch.float32) / 255
    return rgb[:, None, None, :].expand(len(colours), size, size, 3)


def image_graph(colours, size=64) -> dict:
    """EmptyImage per colour, batched with ImageBatch; the batch is output ['img', 0]."""
    graph = {f"c{i}": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                               "color": c}} for i, c in enumerate(colours)}
    prev = "c0"
    for i in range(1, len(colours)):
        node = "img" if i == len(colours) - 1 else f"b{i}"
        graph[node] = {"class_type": "ImageBatch", "inputs": {"image1": [prev, 0], "image2": [f"c{i}", 0]}}
        prev = node
    return graph


def loader(name, kind="auto") -> dict:
    return {"class_type": "AIGRewardModelLoader", "inputs": {"model_name": name, "kind": kind, "device": "default",
                                                            "dtype": "auto"}}


def parse_scores(summary: str) -> dict[int, float]:
    return {int(i): float(v) for i, v in re.findall(r"#(\d+): (-?[\d.]+)", summary)}


def test_loader_lists_files_and_model_directories(comfy_server, rewards_installed):
    info = comfy_server.object_info()
    options = info["AIGRewardModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert PICK_DIR in options and "nested/clip-aesthetic/" in options and HPS_FILE in options
    assert not any(o.startswith(PICK_DIR) and o != PICK_DIR for o in options)  # files inside a model dir hidden
    for node in ("AIGRewardModelLoader", "AIGScoreImages", "AIGRankImages"):
        assert info[node]["category"] == "AIG/rewards"
        specs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        assert all(spec[1].get("tooltip") for spec in specs.values()), node


@pytest.mark.parametrize(("name", "kind", "prompt"), [(PICK_DIR, "pickscore", "a yellow square"),
                                                      ("nested/clip-aesthetic/", "aesthetic", "")])
def test_score_node_matches_library(comfy_server, rewards_installed, name, kind, prompt):
    graph = image_graph(COLOURS) | {"m": loader(name), "s": {"class_type": "AIGScoreImages", "inputs": {
        "reward_model": ["m", 0], "images": ["img", 0], "prompt": prompt, "prompt_per_line": False, "chunk_size": 2}}}
    summary = comfy_server.run(graph)["outputs"]["s"]["text"][0]
    assert summary.startswith(f"{kind} over 3 image(s)")
    path = rewards_installed["pick" if kind == "pickscore" else "aesthetic"]
    expected = load_reward_model(path).score(solid_batch(COLOURS).permute(0, 3, 1, 2), [prompt] * 3)
    got = parse_scores(summary)
    assert torch.allclose(torch.tensor([got[i] for i in range(3)]), expected, atol=2e-4), (summary, expected)


def test_rank_node_with_model_sorts_and_splits(comfy_server, rewards_installed):
    prompts = "a red apple\na green leaf\na yellow sun"
    graph = image_graph(COLOURS) | {
        "m": loader(HPS_FILE),
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}},
        "r": {"class_type": "AIGRankImages", "inputs": {
            "images": ["img", 0], "top_k": 1, "latent": ["lat", 0], "reward_model": ["m", 0], "prompt": prompts,
            "prompt_per_line": True, "chunk_size": 16}},
        "top": {"class_type": "SaveImage", "inputs": {"images": ["r", 1], "filename_prefix": "aig_rank_top"}},
        "rest": {"class_type": "SaveImage", "inputs": {"images": ["r", 3], "filename_prefix": "aig_rank_rest"}},
    }
    entry = comfy_server.run(graph)
    model = load_reward_model(rewards_installed["hps"])
    assert model.kind == "hpsv2.1"
    expected = model.score(solid_batch(COLOURS).permute(0, 3, 1, 2), prompts.splitlines())
    best = int(expected.argmax())
    top = entry["outputs"]["top"]["images"]
    rest = entry["outputs"]["rest"]["images"]
    assert len(top) == 1 and len(rest) == 2
    pixel = np.asarray(Image.open(comfy_server.output_file(top[0])))[0, 0]
    c = COLOURS[best]
    assert tuple(pixel) == ((c >> 16) & 255, (c >> 8) & 255, c & 255)
    summary = entry["outputs"]["r"]["text"][0]
    assert [int(i) for i in re.findall(r"#(\d+):", summary)] == torch.argsort(expected, descending=True).tolist()


def test_scores_list_feeds_rank_node(comfy_server, rewards_installed):
    graph = image_graph(COLOURS, size=48) | {
        "m": loader(PICK_DIR, kind="clipscore"),
        "s": {"class_type": "AIGScoreImages", "inputs": {"reward_model": ["m", 0], "images": ["img", 0],
                                                         "prompt": "green", "prompt_per_line": False, "chunk_size": 16}},
        "r": {"class_type": "AIGRankImages", "inputs": {"images": ["img", 0], "top_k": 2, "scores": ["s", 0]}},
        "top": {"class_type": "SaveImage", "inputs": {"images": ["r", 1], "filename_prefix": "aig_rank_scores"}},
    }
    entry = comfy_server.run(graph)
    scores = parse_scores(entry["outputs"]["s"]["text"][0])
    order = sorted(scores, key=lambda i: -scores[i])
    ranked = [int(i) for i in re.findall(r"#(\d+):", entry["outputs"]["r"]["text"][0])]
    assert ranked == order and len(entry["outputs"]["top"]["images"]) == 2


def test_prompt_count_mismatch_is_a_clear_error(comfy_server, rewards_installed):
    graph = image_graph(COLOURS, size=40) | {"m": loader(PICK_DIR), "s": {"class_type": "AIGScoreImages", "inputs": {
        "reward_model": ["m", 0], "images": ["img", 0], "prompt": "one\ntwo", "prompt_per_line": True,
        "chunk_size": 16}}}
    assert "got 2 non-empty lines for 3 images" in comfy_server.execution_error(graph)


def test_rank_without_scores_or_model_is_a_clear_error(comfy_server, rewards_installed):
    graph = image_graph(COLOURS, size=36) | {"r": {"class_type": "AIGRankImages", "inputs": {
        "images": ["img", 0], "top_k": 1}}}
    assert "connect either scores" in comfy_server.execution_error(graph)


def test_unknown_model_name_is_rejected(comfy_server, rewards_installed):
    response = comfy_server.submit({"m": loader("missing.pt"), "s": {"class_type": "AIGScoreImages", "inputs": {
        "reward_model": ["m", 0], "images": ["c0", 0], "prompt": "", "prompt_per_line": False, "chunk_size": 16}},
        "c0": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}})
    assert response.status_code == 400 and "missing.pt" in response.text


# --- in-process: ranking helpers on latents (no server) ---------------------------------------------

def test_rank_reorders_latents_with_images(comfy_inprocess):
    from comfy_aig.nodes.rewards import prompts_for_batch, rank

    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 2, 2, 3)
    latent = {"samples": torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 4, 2, 2),
              "noise_mask": torch.arange(4, dtype=torch.float32).view(4, 1, 1), "batch_index": [10, 11, 12, 13]}
    order, ranked, top, rest, lat_top, lat_rest = rank(images, [0.1, 0.9, 0.5, 0.9], 2, latent)
    assert order.tolist() == [1, 3, 2, 0]  # stable for the tie
    assert ranked[:, 0, 0, 0].tolist() == [1, 3, 2, 0] and top.shape[0] == 2 and rest.shape[0] == 2
    assert lat_top["samples"][:, 0, 0, 0].tolist() == [1, 3] and lat_rest["samples"][:, 0, 0, 0].tolist() == [2, 0]
    assert lat_top["noise_mask"][:, 0, 0].tolist() == [1, 3] and lat_top["batch_index"] == [11, 13]
    with pytest.raises(ValueError, match="got 3 scores for 4 images"):
        rank(images, [1.0, 2.0, 3.0], 1)
    with pytest.raises(ValueError, match="latent batch 4 does not match image batch 2"):
        rank(images[:2], [1.0, 2.0], 1, latent)
    assert prompts_for_batch("a\n\nb\n", True, 2) == ["a", "b"] and prompts_for_batch("x", False, 3) == ["x"] * 3


def test_loader_cache_listing_and_progress_inprocess(comfy_inprocess, tmp_path, monkeypatch):
    import comfy.utils
    import folder_paths

    from comfy_aig.nodes import reward_loader
    from comfy_aig.nodes.rewards import score_images

    build_hps_file(tmp_path / "HPS_v2_tiny.pt", sidecar=True)
    build_aesthetic_head(tmp_path / "stray" / "head.pth")  # files in plain subfolders are listed as files
    (tmp_path / "clipdir").mkdir()
    (tmp_path / "clipdir" / "config.json").write_text("{}")
    (tmp_path / "clipdir" / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "reward_models", ([str(tmp_path)], {".pt", ".pth",
                                                                                                   ".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    assert reward_loader.list_reward_models() == ["HPS_v2_tiny.pt", "clipdir/", "stray/head.pth"]

    first = reward_loader.get_reward_handle("HPS_v2_tiny.pt", "auto", "cpu", "auto")
    assert reward_loader.get_reward_handle("HPS_v2_tiny.pt", "auto", "cpu", "auto") is first  # cached across runs
    other = reward_loader.get_reward_handle("HPS_v2_tiny.pt", "clipscore", "cpu", "fp32")
    assert other is not first and other.kind == "clipscore" and list(reward_loader._CACHE.values()) == [other]

    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        calls.append((value, total)))
    images = torch.rand(5, 40, 40, 3)
    scores = score_images(other, images, ["p"] * 5, chunk_size=2)
    assert calls == [(2, 5), (4, 5), (5, 5)] and other.model.chunk_size == 32 and "progress" not in vars(other.model)
    expected = load_reward_model(tmp_path / "HPS_v2_tiny.pt", kind="clipscore").score(images.permute(0, 3, 1, 2), ["p"] * 5)
    torch.testing.assert_close(scores, expected)

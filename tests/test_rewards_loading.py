"""Reward loading: auto-detection per layout, explicit kinds, and clear errors for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aig_testkit.reward_fixtures import (
    TINY_OPEN_CLIP_CFG,
    aesthetic_head_state_dict,
    build_aesthetic_head,
    build_hps_file,
    build_malicious_pickle,
    build_pickscore_dir,
    tiny_open_clip_model,
)
from comfy_aig.core.rewards import RewardInputError, load_reward_model
from comfy_aig.core.rewards.loading import detect_layout
from comfy_aig.core.rewards.tokenizer import build_clip_tokenizer

PARTI = Path(__file__).resolve().parent / "data" / "PartiPrompts.tsv"  # vendored, Apache-2.0 (LICENSE beside it)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("reward_layouts")


@pytest.fixture(scope="module")
def clip_dir(root):
    return build_pickscore_dir(root / "clip-vit-tiny")


@pytest.fixture(scope="module")
def aesthetic_dir(root):
    d = build_pickscore_dir(root / "clip-with-aesthetic", safetensors=False)  # pytorch_model.bin layout
    build_aesthetic_head(d / "sac+logos+ava1-l14-linearMSE.pth")
    return d


def test_auto_detect_each_layout(root, clip_dir, aesthetic_dir):
    pick = build_pickscore_dir(root / "PickScore_v1")
    hps21 = build_hps_file(root / "HPS_v2.1_compressed.pt")
    hps2 = build_hps_file(root / "HPS_v2_compressed.pt")
    plain = build_hps_file(root / "open_clip_tiny.safetensors")
    head = build_aesthetic_head(root / "aesthetic_head.safetensors")
    assert detect_layout(pick).kind == "pickscore"
    assert detect_layout(clip_dir).kind == "clipscore"
    assert detect_layout(hps21).kind == "hpsv2.1"
    assert detect_layout(hps2).kind == "hpsv2"
    assert detect_layout(plain).kind == "clipscore"
    assert detect_layout(aesthetic_dir).kind == "aesthetic"
    layout = detect_layout(head, backbone=clip_dir)
    assert (layout.kind, layout.backbone, layout.head_path) == ("aesthetic", "hf", head)


def test_loaded_kinds_and_score_conventions(root, clip_dir, aesthetic_dir):
    images = torch.rand(2, 3, 64, 64)
    prompts = ["a cat", "a dog"]
    clipscore = load_reward_model(clip_dir)
    pick = load_reward_model(clip_dir, kind="pickscore")
    hps_like = load_reward_model(clip_dir, kind="hpsv2")
    assert (clipscore.kind, pick.kind, hps_like.kind) == ("clipscore", "pickscore", "hpsv2")
    cos = (pick.image_features(images) * pick.text_features(prompts)).sum(-1)
    torch.testing.assert_close(pick.score(images, prompts), 100.0 * cos, atol=1e-3, rtol=1e-4)  # ln(100) scale
    torch.testing.assert_close(clipscore.score(images, prompts), (100.0 * cos).clamp(min=0), atol=1e-3, rtol=1e-4)
    aesthetic = load_reward_model(aesthetic_dir)
    assert aesthetic.kind == "aesthetic" and aesthetic.score(images, None).shape == (2,)
    ref_head = torch.nn.Sequential(*[torch.nn.Identity()] * 8)
    sd = aesthetic_head_state_dict()
    for i in (0, 2, 4, 6, 7):
        ref_head[i] = torch.nn.Linear(*sd[f"layers.{i}.weight"].shape[::-1])
    ref_head.load_state_dict({k.removeprefix("layers."): v for k, v in sd.items()})  # LAION MLP = affine chain
    expected = ref_head(aesthetic.image_features(images)).squeeze(-1)
    torch.testing.assert_close(aesthetic.score(images, ["ignored", "too"]), expected)


def test_tokenizer_files_in_directory_are_used(root, clip_dir):
    import shutil

    from comfy_aig.core.rewards.tokenizer import write_clip_tokenizer_files

    with_tok = root / "clip-with-tokenizer"
    shutil.copytree(clip_dir, with_tok)
    write_clip_tokenizer_files(with_tok)
    model = load_reward_model(with_tok)
    assert model.backbone.tokenizer.name_or_path == str(with_tok)
    images, prompts = torch.rand(2, 3, 48, 48), ["a tokenizer test", "ok"]
    torch.testing.assert_close(model.score(images, prompts), load_reward_model(clip_dir).score(images, prompts))


def test_open_clip_sidecar_and_safetensors(root):
    file = build_hps_file(root / "sidecar" / "HPS_v2.1_compressed.safetensors", sidecar=True)
    model = load_reward_model(file)  # architecture from HPS_v2.1_compressed.json
    assert model.kind == "hpsv2.1" and model.backbone.image_size == 224


def test_open_clip_directory_with_aesthetic_head(root):
    d = root / "open_clip_dir"
    build_hps_file(d / "open_clip_model.safetensors")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP_CFG}))
    assert load_reward_model(d).kind == "clipscore"
    build_aesthetic_head(d / "aesthetic.safetensors")
    model = load_reward_model(d)
    assert model.kind == "aesthetic" and model.score(torch.rand(2, 3, 40, 50), None).shape == (2,)


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-H-14", "ViT-L-14"])  # CLIPScore, HPSv2, aesthetic backbones
def test_known_open_clip_architecture_is_matched_from_shapes(name):
    import open_clip

    from comfy_aig.core.rewards.backbones import match_open_clip_config

    cfg = open_clip.get_model_config(name)
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in _meta_state_dict(cfg).items()}
    matched, matched_cfg = match_open_clip_config(shapes)
    assert matched == name and matched_cfg == cfg


def _meta_state_dict(cfg):
    from open_clip.model import CLIP

    with torch.device("meta"):
        return CLIP(**cfg).state_dict()


# --- bad input -------------------------------------------------------------------------------------

def test_wrong_kind_of_file_lists_keys(root):
    bad = root / "unet.safetensors"
    save_file({"down_blocks.0.weight": torch.zeros(2), "conv_in.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match=r"not a reward model file.*conv_in\.weight"):
        load_reward_model(bad)


def test_directory_without_config(root):
    empty = root / "no_config"
    empty.mkdir()
    (empty / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="has no config.json"):
        load_reward_model(empty)


def test_non_clip_config(root):
    d = root / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' model, not a CLIP model"):
        load_reward_model(d)


def test_missing_and_unexpected_open_clip_keys(root):
    sd = tiny_open_clip_model().state_dict()
    sd.pop("ln_final.weight")
    sd["extra.head.weight"] = torch.zeros(1)
    file = root / "HPS_broken.pt"
    torch.save({"state_dict": sd}, file)
    with pytest.raises(ValueError, match=r"missing keys \['ln_final\.weight'\].*unexpected keys \['extra\.head\.weight'\]"):
        load_reward_model(file, model_config=TINY_OPEN_CLIP_CFG)


def test_missing_keys_in_transformers_directory(root):
    d = build_pickscore_dir(root / "PickScore_broken")
    from safetensors.torch import load_file

    sd = load_file(str(d / "model.safetensors"))
    sd.pop("visual_projection.weight")
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys \['visual_projection\.weight'\]"):
        load_reward_model(d)


def test_unknown_architecture_asks_for_model_config(root):
    with pytest.raises(ValueError, match="pass model_config"):
        load_reward_model(build_hps_file(root / "HPS_v2_nocfg.pt"))


def test_malicious_pickle_is_refused_without_running_it(root):
    marker = root / "pwned"
    evil = build_malicious_pickle(root / "HPS_v2_evil.pt", marker)
    with pytest.raises(ValueError, match=r"refused by torch.load\(weights_only=True\)"):
        load_reward_model(evil)
    assert not marker.exists()


def test_head_without_backbone_and_kind_mismatch(root, clip_dir, aesthetic_dir):
    head = build_aesthetic_head(root / "lonely_head.pth")
    with pytest.raises(ValueError, match="without its CLIP"):
        load_reward_model(head)
    with pytest.raises(ValueError, match="does not fit"):
        load_reward_model(clip_dir, kind="aesthetic")
    with pytest.raises(ValueError, match="does not fit"):
        load_reward_model(aesthetic_dir, kind="pickscore")
    with pytest.raises(ValueError, match="unknown reward kind"):
        load_reward_model(clip_dir, kind="imagereward")
    with pytest.raises(ValueError, match="does not exist"):
        load_reward_model(root / "nope")


def test_head_width_must_fit_backbone(root, clip_dir):
    head = build_aesthetic_head(root / "wide_head.safetensors", dim=768)
    with pytest.raises(ValueError, match="expects 768-d CLIP embeddings but the backbone gives 16-d"):
        load_reward_model(head, backbone=clip_dir)


@pytest.fixture(scope="module")
def model(clip_dir):
    return load_reward_model(clip_dir)


@pytest.mark.parametrize(
    ("images", "prompts", "message"),
    [
        (torch.rand(2, 3, 32, 32), ["one"], "got 1 prompts for a batch of 2"),
        (torch.rand(2, 3, 32, 32), "one prompt", "single str"),
        (torch.rand(2, 3, 32, 32), None, "needs one prompt per image"),
        (torch.rand(0, 3, 32, 32), [], "empty batch"),
        (torch.full((2, 3, 8, 8), float("nan")), ["a", "b"], "NaN"),
        (torch.rand(3, 32, 32), ["a"], "rank 4"),
        (torch.rand(1, 32, 32, 3), ["a"], "permute"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), ["a"], "divide uint8"),
    ],
)
def test_bad_inputs_name_problem_and_fix(model, images, prompts, message):
    with pytest.raises(RewardInputError, match=message):
        model.score(images, prompts)


def test_tokenizer_from_open_clip_bpe_matches_simple_tokenizer():
    import open_clip

    prompts = [line.split("\t")[0] for line in PARTI.read_text(encoding="utf-8").splitlines()[1:401]]
    ours = build_clip_tokenizer()(prompts, padding="max_length", truncation=True, max_length=77,
                                  return_tensors="pt").input_ids
    ref = open_clip.tokenizer.SimpleTokenizer()(prompts)
    used = ref != 0  # open_clip pads with 0, transformers with <|endoftext|>
    assert torch.equal(ours[used], ref[used])
    assert (ours[~used] == 49407).all()

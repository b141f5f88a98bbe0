"""Tests of the demo's feature network (its Inception), the classifier reward and the seed aggregation."""

from __future__ import annotations

import json

import pytest
import torch

from comfy_aig.training.demo import featnet
from comfy_aig.training.demo.reward import REWARDS, ClassifierReward, FeatureNetFeatures, make_reward


@pytest.fixture(scope="module")
def net():
    return featnet.load_feature_net()


def test_shipped_feature_net_is_small_safetensors_and_loads(net):
    weights = featnet.PACKAGE_DIR / featnet.WEIGHTS_NAME
    assert weights.stat().st_size < 2**20  # < 1 MB
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["config"])["feature_dim"] == featnet.FEATURE_DIM
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    images = torch.rand(5, 3, 32, 32)
    feats = net.features(images)
    assert feats.shape == (5, featnet.FEATURE_DIM) and torch.isfinite(feats).all()
    logits = net(images)
    assert {k: v.shape[1] for k, v in logits.items()} == featnet.HEADS
    with pytest.raises(FileNotFoundError, match="featnet"):
        featnet.load_feature_net(weights.parent / "missing.safetensors")


def test_feature_net_record_has_command_and_held_out_accuracy():
    record = json.loads((featnet.PACKAGE_DIR / featnet.RECORD_NAME).read_text())["training"]
    assert "comfy_aig.training.demo.featnet" in record["command"] and record["seconds"] > 0
    accuracy = record["held_out_accuracy"]
    assert set(accuracy) == {"clean", "nuisance"}
    for heads in accuracy.values():
        assert set(heads) == set(featnet.HEADS)
    chance = {"shape": 1 / 3, "colour": 1 / 6, "position": 1 / 9, "size": 1 / 3}
    for head, value in accuracy["clean"].items():
        assert value > 0.85, head  # the clean world is easy
    for head, value in accuracy["nuisance"].items():
        assert value > 2 * chance[head], head  # well above chance under backgrounds, tints, noise and speckle


def test_feature_net_accuracy_reproduces_on_fresh_held_out_images(net):
    images, labels = featnet.nuisance_batch(300, torch.Generator().manual_seed(777), clean_share=1.0)
    accuracy = featnet.accuracies(net, images, labels)
    for head in ("shape", "colour", "position"):
        assert accuracy[head] > 0.85, (head, accuracy)


def test_nuisance_batch_is_seeded_in_range_and_labelled():
    a, la = featnet.nuisance_batch(64, torch.Generator().manual_seed(1))
    b, lb = featnet.nuisance_batch(64, torch.Generator().manual_seed(1))
    assert a.shape == (64, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    for name, n in featnet.HEADS.items():
        assert torch.equal(la[name], lb[name]) and la[name].min() >= 0 and la[name].max() < n


def test_classifier_reward_prefers_its_colour_and_is_differentiable(net):
    from comfy_aig.training.demo import world

    reward = ClassifierReward("colour", "blue", net=net)
    scenes = world.sample_scenes(12, torch.Generator().manual_seed(0))
    blue = world.Scenes(scenes.shape, torch.full_like(scenes.colour, world.COLOUR_NAMES.index("blue")),
                        scenes.radius, scenes.centre, scenes.background)
    red = world.Scenes(scenes.shape, torch.zeros_like(scenes.colour), scenes.radius, scenes.centre,
                       scenes.background)
    images = torch.cat([world.render(blue), world.render(red)]).requires_grad_(True)
    scores = reward.score(images, None)
    assert scores.shape == (24,) and scores.min() >= 0 and scores.max() <= 1
    assert scores[:12].mean() > 0.8 and scores[12:].mean() < 0.2
    scores.sum().backward()
    assert images.grad.abs().sum() > 0
    assert reward.image_features(images.detach()).shape == (24, featnet.FEATURE_DIM)
    assert FeatureNetFeatures(net).image_features(images.detach()).shape == (24, featnet.FEATURE_DIM)
    with pytest.raises(ValueError, match="valid"):
        ClassifierReward("colour", "purple", net=net)


def test_reward_registry_and_cli_reject_unknown_rewards(tmp_path):
    assert set(REWARDS) == {"yellowness", "classifier-blue"}
    assert make_reward("yellowness").kind == "demo-yellowness"
    with pytest.raises(ValueError, match="classifier-blue"):
        make_reward("sharpness")
    from comfy_aig.cli import main

    with pytest.raises(SystemExit, match="unknown reward"):
        main(["demo", "--quick", "--reward", "sharpness", "--out", str(tmp_path)])


def _report(seed: int, shift: float) -> dict:
    def point(method, label, reward, vendi, parameter=None):
        values = {"reward_mean": reward, "reward_std": 0.01, "nfe_per_image": 20}
        for prefix in ("", "pixel_"):
            values.update({prefix + "vendi": vendi, prefix + "scd": 10 - vendi, prefix + "log_scd": 1.0,
                           prefix + "recall": vendi / 10, prefix + "precision": 0.5, prefix + "fid": 5.0})
        return {"method": method, "label": label, "mode": "x", "parameter": parameter, "schedule": None,
                "lora_scale": None, "adapter": "draft", **values}

    from comfy_aig.training.demo.demo_cli import compare_at_matched_reward

    points = [point("base", "base", 0.0, 9.0), point("tuned", "DRaFT LoRA", 1.0, 1.0, 1.0),
              point("lora-scale", "LoRA scale 0.5", 0.5, 3.0 + shift, 0.5),
              point("aig", "AIG power p=1", 0.5, 5.0 + shift, 1.0)]
    return {"config": {"seed": seed, "eval_images": 4, "steps": 2, "guidance_scale": 3.0}, "points": points,
            "comparison": compare_at_matched_reward(points), "training": {}, "seconds_total": 1.0,
            "reward": "r", "reward_name": "yellowness"}


def test_aggregate_gives_mean_std_and_spread_aware_comparison(tmp_path):
    from comfy_aig.training.demo.aggregate import aggregate_reports

    agg = aggregate_reports([_report(0, 0.0), _report(1, 1.0), _report(2, 2.0)])
    assert agg["seeds"] == [0, 1, 2]
    aig = next(p for p in agg["points"] if p["method"] == "aig")
    assert aig["vendi"] == pytest.approx(6.0) and aig["vendi_std"] == pytest.approx(1.0)
    assert aig["pixel_recall_std"] == pytest.approx(0.1) and aig["nfe_per_image"] == 20
    row = agg["comparison"][0]
    # AIG is 2 Vendi above LoRA scaling at every seed: difference 2, spread 0 -> beyond the spread
    assert row["diff_mean_lora_scale_vendi"] == pytest.approx(2.0)
    assert row["diff_std_lora_scale_vendi"] == pytest.approx(0.0)
    assert row["kl_vendi"] is None  # no KL points: no KL curve
    from comfy_aig.training.demo.report import comparison_table, markdown_table

    table = comparison_table(agg["comparison"])
    assert "AIG power p=1 | LoRA scaling" in table and "better" in table
    assert "6.00 ± 1.00" in markdown_table(agg["points"])

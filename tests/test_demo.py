"""End-to-end tests of `comfy-aig demo`: the quick run on the shipped base model, and determinism."""

from __future__ import annotations

import json

import pytest
import torch

from aig_testkit.demo_fixtures import TINY
from comfy_aig.cli import main
from comfy_aig.training.demo.demo_cli import run_demo
from comfy_aig.training.demo.model import DemoBaseModel
from comfy_aig.training.demo.pipeline import DemoConfig

METHODS = {"base", "tuned", "aig", "aig-window", "lora-scale"}
DIVERSITY = ("scd", "log_scd", "recall", "precision", "vendi", "fid")
METRICS = ("reward_mean", "reward_std", *DIVERSITY, *("pixel_" + k for k in DIVERSITY), "nfe_per_image")


@pytest.mark.slow
def test_quick_demo_writes_outputs_and_shows_reward_hacking(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    for name in ("report.json", "report.md", "pareto.png", "train_draft/metrics.jsonl"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    lora = out / report["training"]["draft"]["lora_file"]
    from safetensors.torch import load_file

    keys = list(load_file(str(lora)))
    assert keys and all(k.startswith("lora_unet_") for k in keys)  # kohya file, as ComfyUI loads it
    points = report["points"]
    assert {p["method"] for p in points} >= METHODS
    for method in {p["method"] for p in points}:
        assert (out / "grids" / f"{method}.png").is_file(), method
    for p in points:
        for key in METRICS:
            assert isinstance(p[key], (int, float)), (p["label"], key)
    base = next(p for p in points if p["method"] == "base")
    tuned = next(p for p in points if p["method"] == "tuned")
    # reward hacking: the tuned model's reward beats the base while its diversity drops, in both spaces
    assert tuned["reward_mean"] > base["reward_mean"] + 0.1
    for prefix in ("", "pixel_"):  # feature-net features (primary), then 8x8 pixels
        assert tuned[prefix + "vendi"] < base[prefix + "vendi"], prefix
        assert tuned[prefix + "scd"] > 0 and base[prefix + "scd"] == 0.0, prefix
        assert tuned[prefix + "recall"] < base[prefix + "recall"], prefix
    assert report["reward_name"] == "yellowness"
    assert set(report["feature_net"]["held_out_accuracy"]) == {"clean", "nuisance"}
    rows = report["comparison"]
    assert rows and all(r["lora_scale_vendi"] is None or "lora_scale_pixel_vendi" in r for r in rows)
    curve = report["training"]["draft"]["curve"]
    assert curve[-1]["reward_mean"] > curve[0]["reward_mean"]
    # AIG costs more evaluations than one model, the window variant less than full AIG
    aig = [p for p in points if p["method"] == "aig"]
    window = [p for p in points if p["method"] == "aig-window"]
    assert all(p["nfe_per_image"] > base["nfe_per_image"] for p in aig)
    assert all(w["nfe_per_image"] < min(p["nfe_per_image"] for p in aig) for w in window)
    md = (out / "report.md").read_text()
    assert "| point |" in md and "Conclusion" in md and tuned["label"] in md
    assert "## Points: feature-net features (primary)" in md and "## Points: 8x8-pooled pixels" in md
    assert "FID (feature net)" in md and "FID (pixels)" in md
    assert "## Matched-reward comparison: feature net" in md


@pytest.mark.slow
def test_demo_is_deterministic_for_a_seed(tmp_path):
    torch.manual_seed(0)
    base_file = tmp_path / "base.safetensors"
    DemoBaseModel(TINY).save(base_file)
    cfg = DemoConfig(steps=3, eval_images=8, eval_chunk=8, train_steps=2, train_batch=2, aig_powers=[2.0],
                     lora_scales=[0.5], kl_weights=[], aig_windows=[], grid_images=2)
    first = run_demo(cfg, tmp_path / "a", base_file, figures=False)
    second = run_demo(cfg, tmp_path / "b", base_file, figures=False)
    assert len(first["points"]) == len(second["points"]) == 4
    for p, q in zip(first["points"], second["points"]):
        for key in METRICS:
            assert p[key] == pytest.approx(q[key], rel=1e-6, abs=1e-9), (p["label"], key)
    assert first["training"]["draft"]["curve"] == second["training"]["draft"]["curve"]


@pytest.mark.slow
def test_demo_seeds_and_rewards_give_mean_std_reports(tmp_path, monkeypatch):
    """--seeds and --reward on a tiny model: per-seed folders, one mean ± std report per reward, an index."""
    from comfy_aig.training.demo import pipeline

    torch.manual_seed(0)
    base_file = tmp_path / "base.safetensors"
    DemoBaseModel(TINY).save(base_file)
    tiny = {"steps": 2, "eval_images": 8, "eval_chunk": 8, "train_steps": 1, "train_batch": 2, "aig_powers": [2.0],
            "lora_scales": [0.5], "kl_weights": [], "aig_windows": [], "grid_images": 2}
    monkeypatch.setattr(pipeline.DemoConfig, "quick", classmethod(lambda cls, seed=0, reward="yellowness":
                                                                  cls(seed=seed, reward=reward, **tiny)))
    out = tmp_path / "multi"
    assert main(["demo", "--quick", "--out", str(out), "--base-model", str(base_file),
                 "--reward", "yellowness", "classifier-blue", "--seeds", "0", "1"]) == 0
    for reward in ("yellowness", "classifier-blue"):
        folder = out / reward
        for seed in (0, 1):
            assert (folder / f"seed_{seed}" / "report.json").is_file()
        report = json.loads((folder / "report.json").read_text())
        assert report["seeds"] == [0, 1] and report["reward_name"] == reward
        for p in report["points"]:
            for key in METRICS[:-1]:
                assert isinstance(p[key], float) and p[f"{key}_std"] >= 0, (p["label"], key)
        assert (folder / "pareto.png").is_file()
        md = (folder / "report.md").read_text()
        assert "±" in md and "## Points: 8x8-pooled pixels" in md
    index = (out / "report.md").read_text()
    assert "yellowness/report.md" in index and "classifier-blue/report.md" in index

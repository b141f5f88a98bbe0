"""`comfy-aig sample` and `comfy-aig verify-lora` on tiny models in real file layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from aig_testkit.diffusers_fixtures import TINY_PIXEL_UNET, build_tiny_sd15
from aig_testkit.sd_fixtures import build_kohya_lora, lora_target_modules
from comfy_aig.cli import main
from comfy_aig.training.lora_export import export_kohya
from comfy_aig.training.models import add_lora, load_pipeline, shipped_config_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(diffusers dir, single file, kohya LoRA trained-looking for it)."""
    root = tmp_path_factory.mktemp("tiny_cli")
    directory, single = build_tiny_sd15(root)
    unet = load_pipeline(directory).unet
    n_modules = len(lora_target_modules(unet))
    add_lora(unet, rank=2, alpha=4.0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return directory, single, export_kohya(unet, root / "lora.safetensors"), n_modules


def _pixels(path):
    return torch.from_numpy(np.asarray(Image.open(path)).copy())


@pytest.mark.slow
def test_sample_modes_and_metadata(tiny, tmp_path):
    directory, _, lora, _ = tiny
    common = ["sample", "--model", str(directory), "--prompt", "a red circle", "--num", "2", "--seed", "5",
              "--steps", "2", "--cfg", "2.0"]
    assert main(common + ["--out", str(tmp_path / "base")]) == 0
    files = sorted((tmp_path / "base").glob("*.png"))
    assert [f.name for f in files] == ["p0000_s5.png", "p0000_s6.png"]
    info = Image.open(files[0]).info
    assert info["prompt"] == "a red circle" and info["seed"] == "5"
    settings = json.loads(info["comfy-aig"])
    assert settings["mode"] == "base" and settings["nfe"] == 4 and settings["steps"] == 2
    assert main(common + ["--batch-size", "1", "--out", str(tmp_path / "again")]) == 0  # seeds, not batches
    assert torch.equal(_pixels(files[1]), _pixels(tmp_path / "again" / "p0000_s6.png"))
    assert main(common + ["--mode", "lora", "--lora", str(lora), "--lora-scale", "0", "--out",
                          str(tmp_path / "zero")]) == 0
    assert torch.equal(_pixels(files[0]), _pixels(tmp_path / "zero" / "p0000_s5.png"))
    assert main(common + ["--mode", "lora", "--lora", str(lora), "--out", str(tmp_path / "lora")]) == 0
    assert not torch.equal(_pixels(files[0]), _pixels(tmp_path / "lora" / "p0000_s5.png"))
    assert main(common + ["--mode", "aig", "--lora", str(lora), "--schedule", "power", "--p", "3",
                          "--out", str(tmp_path / "aig")]) == 0
    settings = json.loads(Image.open(tmp_path / "aig" / "p0000_s5.png").info["comfy-aig"])
    assert settings["schedule"] == "power(p=3)" and settings["lora"] == str(lora)
    assert main(common + ["--mode", "aig", "--out", str(tmp_path / "x")]) == 2  # needs --lora: clear error


def test_verify_lora_matches_dir_and_single_file(tiny, capsys):
    directory, single, lora, n_modules = tiny
    assert main(["verify-lora", str(lora), "--base", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matched"] == n_modules and report["unmatched"] == []
    assert report["effective_scale"] == {"2": n_modules}  # alpha 4 / rank 2
    assert main(["verify-lora", str(lora), "--base", str(single), "--config-dir", str(directory),
                 "--strength", "0.5"]) == 0
    assert "effective scale (strength * alpha / rank): 1 x" in capsys.readouterr().out


def test_verify_lora_shipped_sd15_config(tmp_path, capsys):
    base = tmp_path / "sd15_keys_only.safetensors"  # detect_kind reads keys only; shapes come from the config
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(base))
    config = json.loads((shipped_config_dir("sd15") / "unet" / "config.json").read_text())
    lora = build_kohya_lora(tmp_path / "real_sd15_lora.safetensors", rank=4, alpha=2.0,
                            unet_config={k: v for k, v in config.items() if not k.startswith("_")})
    assert main(["verify-lora", str(lora), "--base", str(base), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matched"] == 16 * 4 * 2  # 16 transformer blocks x (q, k, v, out) x (attn1, attn2)
    assert report["effective_scale"] == {"0.5": 128}


def test_verify_lora_fails_on_zero_matches(tiny, tmp_path, capsys):
    from diffusers import UNet2DConditionModel

    directory = tiny[0]
    other = UNet2DConditionModel(**TINY_PIXEL_UNET)  # same module names, other widths
    add_lora(other, rank=2, alpha=2.0)
    lora = export_kohya(other, tmp_path / "other.safetensors")
    assert main(["verify-lora", str(lora), "--base", str(directory)]) == 1
    out = capsys.readouterr().out
    assert "matched UNet modules: 0" in out and "shape: LoRA in/out" in out
    peft_style = tmp_path / "peft.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 4)}, str(peft_style))
    assert main(["verify-lora", str(peft_style), "--base", str(directory)]) == 2
    assert "peft/diffusers-style keys" in capsys.readouterr().err

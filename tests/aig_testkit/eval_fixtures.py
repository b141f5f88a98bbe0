"""A tiny world for `comfy-aig evaluate` tests: tiny SD1.5 dir, a tuned and a KL kohya LoRA, a PartiPrompts TSV,
a sweep config (as data and as TOML) and a comparable view of an evaluation set's records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

PARTI_TSV = ("Prompt\tCategory\tChallenge\tNote\n"
             "a red circle\tAbstract\tBasic\t\n"
             "a blue square on grass\tOutdoor Scenes\tBasic\t\n"
             "a dog\tAnimals\tBasic\t\n"
             "a green triangle\tAbstract\tBasic\t\n"
             "a cat on a sofa\tAnimals\tBasic\t\n")


def _lora(directory: Path, path: Path, seed: int, std: float) -> Path:
    """A kohya LoRA (rank 2, alpha 4) for the tiny SD1.5 with random up weights (tuned != base)."""
    from diffusers import UNet2DConditionModel

    from comfy_aig.training.lora_export import export_kohya
    from comfy_aig.training.models import add_lora

    unet = UNet2DConditionModel.from_pretrained(str(Path(directory) / "unet"), local_files_only=True)
    add_lora(unet, rank=2, alpha=4.0, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return export_kohya(unet, path)


def build_eval_world(root: Path) -> dict:
    """{model, tuned, kl, prompts}: paths of the tiny model dir, two LoRAs and a 5-row PartiPrompts TSV."""
    from aig_testkit.diffusers_fixtures import build_tiny_sd15

    root = Path(root)
    directory, _ = build_tiny_sd15(root)
    prompts = root / "parti.tsv"
    prompts.write_text(PARTI_TSV, encoding="utf-8")
    return {"model": directory, "tuned": _lora(directory, root / "tuned.safetensors", 1, 0.5),
            "kl": _lora(directory, root / "kl.safetensors", 2, 0.2), "prompts": prompts}


def sweep_data(world: dict, out: Path, **sections) -> dict:
    """A small sweep: base, lora:1, lora:0.5, aig:p=2, kl:small; 3 Abstract/Animals prompts x 2 images, 2 steps."""
    data = {
        "model": {"path": str(world["model"]), "resolution": 16, "device": "cpu"},
        "lora": {"tuned": str(world["tuned"]), "kl": [{"name": "small", "path": str(world["kl"])}]},
        "methods": {"lora_scales": [0.5], "aig": [{"schedule": "power", "p": 2.0}]},
        "prompts": {"file": str(world["prompts"]), "categories": ["Abstract", "Animals"], "limit": 3,
                    "images_per_prompt": 2, "seeds": [7]},
        "sampling": {"steps": 2, "guidance_scale": 2.0, "batch_size": 4},
        "metrics": {"reward": [{"source": "builtin:redness"}], "features": "pixels", "pixel_size": 4, "k": 2},
        "output": {"dir": str(out), "set": "sweep"},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans: JSON spells them as TOML does


def to_toml(data: dict) -> str:
    """TOML text of {section: {key: value}} (values: scalars, lists, inline tables)."""
    return "".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()) + "\n"
                   for name, values in data.items())


def record_view(folder: Path) -> dict:
    """name -> (label, prompts, seeds, batch indices, feature source, features, scores) of a set's records."""
    from comfy_aig.core.evalset import RECORD_GLOB, EvalRecord

    out = {}
    for path in sorted(Path(folder).glob(RECORD_GLOB)):
        r = EvalRecord.from_file(path)
        out[path.name] = (r.label, r.prompts, r.seeds, r.batch_indices, r.feature_source, r.features, r.scores)
    return out


def assert_same_records(a: dict, b: dict, atol: float = 0.0) -> None:
    """Same names and metadata; features and scores equal (within atol)."""
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name][:5] == b[name][:5], name
        for x, y in zip(a[name][5:], b[name][5:]):
            np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=name)


def report_rows(folder: Path, stem: str = "report_base") -> dict:
    """label -> row of the JSON report in a set folder."""
    return {row["label"]: row for row in json.loads((Path(folder) / f"{stem}.json").read_text())["rows"]}


def assert_same_rows(a: dict, b: dict, rel: float = 1e-9) -> None:
    """Same labels and values (floats within a relative tolerance)."""
    assert list(a) == list(b)
    for label in a:
        for key, value in a[label].items():
            other = b[label][key]
            if isinstance(value, float) and isinstance(other, float):
                assert abs(value - other) <= rel * max(1.0, abs(value)), (label, key, value, other)
            else:
                assert value == other, (label, key, value, other)

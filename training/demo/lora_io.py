"""Save / load the demo's peft LoRA adapter as a kohya-style safetensors file (DESIGN.md section 3, LoRA files).

Keys: `lora_unet_<diffusers module path, . -> _>.lora_down.weight`, `.lora_up.weight`, `.alpha`
(scale = alpha / rank). The toy UNet has no original-SD layout, so module paths are diffusers'.
TODO(lead): route through the trainer's kohya export/import once it exists (see
/work/notes/demo_needs.md); this file then shrinks to two calls.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..sampling import DiffusionModel


def _lora_layers(unet: torch.nn.Module) -> dict:
    """Module path -> peft LoRA layer (those with lora_A / lora_B for the default adapter)."""
    return {name: m for name, m in unet.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}


def _key(path: str) -> str:
    return "lora_unet_" + path.replace(".", "_")


def export_adapter(model: DiffusionModel, path: Path, metadata: dict | None = None) -> None:
    """Write the adapter's (down, up, alpha) per layer; atomic."""
    from safetensors.torch import save_file

    tensors, rank = {}, None
    for name, layer in _lora_layers(model.unet).items():
        down = layer.lora_A["default"].weight.detach().float().contiguous()
        up = layer.lora_B["default"].weight.detach().float().contiguous()
        rank = down.shape[0]
        alpha = layer.scaling["default"] * rank
        tensors[f"{_key(name)}.lora_down.weight"] = down
        tensors[f"{_key(name)}.lora_up.weight"] = up
        tensors[f"{_key(name)}.alpha"] = torch.tensor(float(alpha))
    if not tensors:
        raise ValueError("the UNet has no peft LoRA adapter to export; add one with unet.add_adapter(LoraConfig(...))")
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
            "ss_base_model_version": "comfy_aig_demo_toy", "comfy_aig_demo": json.dumps(metadata or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def import_adapter(model: DiffusionModel, path: Path) -> None:
    """Load a file written by export_adapter into the UNet's existing adapter (same targets and rank)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    layers = _lora_layers(model.unet)
    expected = {f"{_key(n)}.{s}" for n in layers for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise ValueError(f"LoRA file '{path}' does not match the demo adapter (missing {missing}, extra {extra}); "
                         "export it from the same demo configuration")
    with torch.no_grad():
        for name, layer in layers.items():
            down = state[f"{_key(name)}.lora_down.weight"]
            layer.lora_A["default"].weight.copy_(down)
            layer.lora_B["default"].weight.copy_(state[f"{_key(name)}.lora_up.weight"])
            layer.scaling["default"] = float(state[f"{_key(name)}.alpha"]) / down.shape[0]

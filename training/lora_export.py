"""peft LoRA <-> kohya safetensors, the format ComfyUI loads for SD1.x / SDXL UNets (docs/design.md section 4).

Keys per adapted module (diffusers module path with "." -> "_"):
    lora_unet_<path>.lora_down.weight  [r, in(, kh, kw)]   = peft lora_A
    lora_unet_<path>.lora_up.weight    [out, r(, 1, 1)]    = peft lora_B
    lora_unet_<path>.alpha             scalar              = peft scaling * r
so ComfyUI's strength-1 delta  up @ down * alpha / r  equals peft's  B @ A * scaling  (lora_alpha / r, or
lora_alpha / sqrt(r) with rsLoRA). peft/diffusers key names are never written (ComfyUI skips them).

API: ``peft_lora_modules(unet)``, ``export_kohya(unet, path, metadata=...)``, ``read_kohya(path)``,
``kohya_deltas(path)``, ``peft_deltas(unet)``, ``kohya_name(module_path)``, ``lora_config_from_kohya``,
``load_kohya_into_unet(unet, path)`` (adds a peft adapter holding the file's weights).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.files import atomic_write
from .lora_params import is_lora_name

PREFIX = "lora_unet_"
_PEFT_WRAPPER_PREFIX = "base_model.model."


@dataclass
class LoraModule:
    """One LoRA-adapted module: down (A) [r, in, ...], up (B) [out, r, ...] and kohya alpha (= scale * r)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        """Delta W = scale * up @ down, shaped like the module weight."""
        up = self.up.flatten(1).double()
        down = self.down.flatten(1).double()
        out = (up @ down) * self.scale
        if self.down.ndim == 4:
            return out.reshape(self.up.shape[0], *self.down.shape[1:])
        return out


def kohya_name(module_path: str) -> str:
    """'down_blocks.0.attentions.0.proj_in' -> 'lora_unet_down_blocks_0_attentions_0_proj_in'."""
    if module_path.startswith(_PEFT_WRAPPER_PREFIX):
        module_path = module_path[len(_PEFT_WRAPPER_PREFIX):]
    return PREFIX + module_path.replace(".", "_")


def peft_lora_modules(unet: torch.nn.Module, adapter: str = "default") -> dict[str, LoraModule]:
    """diffusers module path -> LoraModule for every peft LoRA layer of `adapter`."""
    from peft.tuners.lora import LoraLayer

    found = {}
    for name, module in unet.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            r = module.r[adapter]
            found[name.removeprefix(_PEFT_WRAPPER_PREFIX)] = LoraModule(
                down=module.lora_A[adapter].weight.detach(), up=module.lora_B[adapter].weight.detach(),
                alpha=float(module.scaling[adapter]) * r)
    if not found:
        raise ValueError(f"no peft LoRA layers with adapter '{adapter}' found; add one with unet.add_adapter(...)")
    return found


def peft_deltas(unet: torch.nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """module path -> Delta W of peft's adapter (B @ A * scaling)."""
    return {name: m.delta() for name, m in peft_lora_modules(unet, adapter).items()}


def kohya_metadata(modules: dict[str, LoraModule], base_model: str, config: dict | None, title: str) -> dict:
    """ss_* and modelspec.* metadata (strings) for a kohya LoRA file."""
    ranks = sorted({m.rank for m in modules.values()})
    alphas = sorted({m.alpha for m in modules.values()})
    arch = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}.get(base_model,
                                                                                            f"{base_model}/lora")
    version = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}.get(base_model, base_model)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(ranks[0]) if len(ranks) == 1 else json.dumps(ranks),
        "ss_network_alpha": f"{alphas[0]:g}" if len(alphas) == 1 else json.dumps(alphas),
        "ss_base_model_version": version,
        "ss_training_config": json.dumps(config or {}, sort_keys=True),
        "ss_training_method": "DRaFT (comfy-aig)",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": arch,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def export_kohya(unet: torch.nn.Module, path: str | os.PathLike, base_model: str = "sd15", config: dict | None = None,
                 title: str = "comfy-aig DRaFT LoRA", adapter: str = "default",
                 dtype: torch.dtype = torch.float32) -> Path:
    """Write the adapter as a kohya LoRA (safetensors, temp file + rename); returns the path."""
    from safetensors.torch import save_file

    modules = peft_lora_modules(unet, adapter)
    state = {}
    for name, m in modules.items():
        key = kohya_name(name)
        state[f"{key}.lora_down.weight"] = m.down.to(dtype).contiguous().cpu()
        state[f"{key}.lora_up.weight"] = m.up.to(dtype).contiguous().cpu()
        state[f"{key}.alpha"] = torch.tensor(m.alpha, dtype=torch.float32)
    metadata = kohya_metadata(modules, base_model, config, title)
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_kohya(path: str | os.PathLike) -> tuple[dict[str, LoraModule], dict[str, str]]:
    """(kohya module name -> LoraModule, metadata); a missing .alpha means alpha = rank (scale 1)."""
    from safetensors import safe_open

    modules: dict[str, dict] = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            base, _, part = key.partition(".")
            modules.setdefault(base, {})[part] = f.get_tensor(key)
    out = {}
    for name, parts in modules.items():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise ValueError(f"{path}: module {name} has keys {sorted(parts)}, expected lora_down.weight, "
                             "lora_up.weight and alpha (is this a kohya LoRA?)")
        down, up = parts["lora_down.weight"].float(), parts["lora_up.weight"].float()
        alpha = float(parts["alpha"]) if "alpha" in parts else float(down.shape[0])
        out[name] = LoraModule(down=down, up=up, alpha=alpha)
    return out, metadata


def kohya_deltas(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """kohya module name -> Delta W at strength 1 (up @ down * alpha / r)."""
    return {name: m.delta() for name, m in read_kohya(path)[0].items()}


def kohya_targets(unet: torch.nn.Module) -> dict[str, tuple[str, torch.nn.Module]]:
    """kohya name -> (diffusers module path, module) for every Linear/Conv2d a LoRA can adapt.

    A peft-wrapped layer counts once, as its base layer under the unwrapped path; LoRA sub-modules are skipped.
    """
    out = {}
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and not is_lora_name(name):
            path = name.replace(".base_layer", "")
            out[kohya_name(path)] = (path, module)
    return out


def module_paths_by_kohya_name(unet: torch.nn.Module) -> dict[str, str]:
    """kohya name -> diffusers module path for every Linear/Conv2d of the UNet."""
    return {key: path for key, (path, _) in kohya_targets(unet).items()}


def load_kohya_into_unet(unet: torch.nn.Module, path: str | os.PathLike, adapter: str = "default") -> int:
    """Add a peft adapter named `adapter` holding a kohya file's weights (per-module rank/alpha); returns #modules."""
    from peft import LoraConfig

    modules, _ = read_kohya(path)
    paths = module_paths_by_kohya_name(unet)
    missing = sorted(set(modules) - set(paths))
    if missing:
        raise ValueError(f"{path}: {len(missing)} LoRA modules have no UNet module (e.g. {missing[0]}); "
                         "is the LoRA for this base model? check with `comfy-aig verify-lora`")
    targets = [paths[n] for n in modules]
    rank_pattern = {re.escape(paths[n]): m.rank for n, m in modules.items()}
    alpha_pattern = {re.escape(paths[n]): m.alpha for n, m in modules.items()}
    first = next(iter(modules.values()))
    unet.add_adapter(LoraConfig(r=first.rank, lora_alpha=first.alpha, target_modules=targets,
                                rank_pattern=rank_pattern, alpha_pattern=alpha_pattern), adapter_name=adapter)
    layers = dict(unet.named_modules())
    with torch.no_grad():
        for name, m in modules.items():
            layer = layers[paths[name]]
            layer.lora_A[adapter].weight.copy_(m.down.reshape(layer.lora_A[adapter].weight.shape))
            layer.lora_B[adapter].weight.copy_(m.up.reshape(layer.lora_B[adapter].weight.shape))
    return len(modules)

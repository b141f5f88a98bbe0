"""`comfy-aig verify-lora LORA --base CKPT`: does a kohya LoRA fit a base model's UNet, and at what scale?

Each ``lora_unet_<path>`` module is matched against the base UNet's Linear/Conv2d modules (built on the meta
device from the base's diffusers config: the diffusers directory's own, or the shipped SD1.5/SDXL config for
a single file, or ``--config-dir``), checking ``lora_down`` in-features and ``lora_up`` out-features.
ComfyUI applies ``strength * alpha / rank * up @ down``; the report gives that effective scale.
Exit status 1 when no module matches (the LoRA would silently do nothing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_FOREIGN_MARKERS = (".lora_A.", ".lora_B.", "lora.down", "lora.up")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """LORA, --base, --config-dir, --kind, --strength, --strict, --json."""
    parser.add_argument("lora", help="kohya LoRA .safetensors")
    parser.add_argument("--base", required=True, help="base checkpoint (.safetensors single file) or diffusers dir")
    parser.add_argument("--config-dir", default=None,
                        help="diffusers config folder for a single-file base (default: shipped SD1.5/SDXL configs)")
    parser.add_argument("--kind", default="auto", choices=("auto", "sd15", "sdxl"), help="base model kind")
    parser.add_argument("--strength", type=float, default=1.0, help="LoRA strength for the effective scale (1.0)")
    parser.add_argument("--strict", action="store_true", help="also fail when any UNet module is unmatched")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def base_unet_modules(base: str | Path, kind: str = "auto", config_dir: str | Path | None = None) -> dict:
    """kohya name -> (module path, in_features, out_features) of the base UNet (meta device, no weights read)."""
    import torch
    from diffusers import UNet2DConditionModel

    from .lora_export import kohya_targets
    from .models import detect_kind, shipped_config_dir

    base = Path(base)
    kind = detect_kind(base) if kind == "auto" else kind
    if base.is_dir():
        folder = base
    else:
        folder = Path(config_dir) if config_dir else shipped_config_dir(kind)
    config_path = folder / "unet" / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no UNet config at {config_path}; pass --config-dir with a diffusers layout")
    config = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return {key: (path, *_fans(module)) for key, (path, module) in kohya_targets(unet).items()}


def _fans(module) -> tuple[int, int]:
    """(in, out) features of a Linear, channels of a Conv2d."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def verify(lora: str | Path, base: str | Path, kind: str = "auto", config_dir=None, strength: float = 1.0) -> dict:
    """Report: matched / unmatched UNet modules (with reasons), other modules, effective scales, metadata."""
    from safetensors import safe_open

    from .lora_export import read_kohya

    with safe_open(str(lora), framework="pt") as f:
        keys = list(f.keys())
    foreign = [k for k in keys if any(m in k for m in _FOREIGN_MARKERS)]
    if foreign:
        raise ValueError(f"{lora} has peft/diffusers-style keys (e.g. {foreign[0]}) that ComfyUI skips for "
                         "attention layers; re-export it with comfy_aig.training.lora_export.export_kohya")
    modules, metadata = read_kohya(lora)
    targets = base_unet_modules(base, kind, config_dir)
    matched, unmatched, other = [], [], []
    scales = {}
    for name, m in sorted(modules.items()):
        if not name.startswith("lora_unet_"):
            other.append(name)
            continue
        if name not in targets:
            unmatched.append({"module": name, "reason": "no such UNet module in the base"})
            continue
        _, fan_in, fan_out = targets[name]
        if m.down.shape[1] != fan_in or m.up.shape[0] != fan_out:
            unmatched.append({"module": name, "reason": f"shape: LoRA in/out {m.down.shape[1]}/{m.up.shape[0]}, "
                                                        f"base {fan_in}/{fan_out}"})
            continue
        matched.append(name)
        scales[f"{strength * m.scale:g}"] = scales.get(f"{strength * m.scale:g}", 0) + 1
    return {"lora": str(lora), "base": str(base), "matched": len(matched), "unmatched": unmatched,
            "other_modules": other, "effective_scale": scales, "strength": strength,
            "rank": sorted({modules[n].rank for n in matched}), "alpha": sorted({modules[n].alpha for n in matched}),
            "metadata": {k: v for k, v in metadata.items() if k != "ss_training_config"}}


def run(args: argparse.Namespace) -> int:
    """Print the report; 1 on zero matches (or any unmatched with --strict)."""
    report = verify(args.lora, args.base, args.kind, args.config_dir, args.strength)
    if args.json:
        print(json.dumps(report, indent=2))  # noqa: T201 - command output
    else:
        lines = [f"LoRA {report['lora']} on base {report['base']}",
                 f"  matched UNet modules: {report['matched']}",
                 f"  unmatched UNet modules: {len(report['unmatched'])}"]
        lines += [f"    {u['module']}: {u['reason']}" for u in report["unmatched"][:20]]
        if report["other_modules"]:
            lines.append(f"  non-UNet modules (not checked): {len(report['other_modules'])}")
        lines.append(f"  rank {report['rank']}, alpha {report['alpha']}")
        lines.append("  effective scale (strength * alpha / rank): "
                     + ", ".join(f"{s} x{n}" for s, n in report["effective_scale"].items()))
        print("\n".join(lines))  # noqa: T201
    if report["matched"] == 0:
        print("error: no LoRA module matches this base model; the LoRA would have no effect")  # noqa: T201
        return 1
    return 1 if args.strict and report["unmatched"] else 0

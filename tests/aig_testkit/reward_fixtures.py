"""Tiny reward models in the real file layouts, built at test time (no weights are committed).

- ``build_pickscore_dir``: transformers CLIPModel directory (config.json + model.safetensors or
  pytorch_model.bin), 224 px input, patch 32, width 32, 2 layers: the PickScore layout.
- ``build_hps_file``: OpenCLIP ``{"state_dict": ...}`` ``.pt`` of a tiny ViT (TINY_OPEN_CLIP_CFG); with
  ``sidecar=True`` an ``open_clip_config``-style JSON (``<stem>.json``) next to it.
- ``build_aesthetic_head``: LAION-v2-shaped affine MLP (layers.0/2/4/6/7) for a D-d embedding.
- ``build_malicious_pickle``: a .pt whose unpickling would create a marker file.
"""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import torch

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_PROJECTION = 16


def tiny_clip_config():
    """transformers CLIPConfig of a tiny ViT-B/32-shaped CLIP with the real 49408-token vocabulary."""
    from transformers import CLIPConfig

    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 77, "vocab_size": 49408, "eos_token_id": 49407, "bos_token_id": 49406,
            "pad_token_id": 49407}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 224, "patch_size": 32}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=TINY_PROJECTION)


def build_pickscore_dir(directory: Path, seed: int = 0, safetensors: bool = True) -> Path:
    """Save a tiny random CLIPModel in the PickScore directory layout; returns the directory."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)  # ln(100), as trained CLIPs
    directory.mkdir(parents=True, exist_ok=True)
    if safetensors:
        model.save_pretrained(str(directory))
    else:
        model.config.save_pretrained(str(directory))
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


def tiny_open_clip_model(seed: int = 0):
    """open_clip CLIP of TINY_OPEN_CLIP_CFG with random weights."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**TINY_OPEN_CLIP_CFG).eval()


def build_hps_file(file: Path, seed: int = 0, sidecar: bool = False, wrapped: bool = True) -> Path:
    """Save a tiny OpenCLIP state dict as {"state_dict": ...} .pt (HPSv2 layout) or .safetensors."""
    model = tiny_open_clip_model(seed)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(file))
    else:
        torch.save({"state_dict": sd} if wrapped else sd, file)
    if sidecar:
        file.with_suffix(".json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP_CFG}))
    return file


def aesthetic_head_state_dict(dim: int = TINY_PROJECTION, seed: int = 0) -> dict[str, torch.Tensor]:
    """LAION v2 layout (Linear at 0/2/4/6/7, dropout between), widths scaled down: dim-32-8-4-2-1."""
    torch.manual_seed(seed)
    widths = {0: (dim, 32), 2: (32, 8), 4: (8, 4), 6: (4, 2), 7: (2, 1)}
    sd = {}
    for i, (fan_in, fan_out) in widths.items():
        layer = torch.nn.Linear(fan_in, fan_out)
        sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"] = layer.weight.detach(), layer.bias.detach()
    return sd


def build_aesthetic_head(file: Path, dim: int = TINY_PROJECTION, seed: int = 0) -> Path:
    """Save the tiny aesthetic MLP head as .pth (plain state dict, as LAION ships it) or .safetensors."""
    sd = aesthetic_head_state_dict(dim, seed)
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(file))
    else:
        torch.save(sd, file)
    return file


class _Payload:
    """Unpickling this calls pathlib.Path.touch(marker): the kind of code a hostile .pt runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def build_malicious_pickle(file: Path, marker: Path) -> Path:
    """A .pt that looks like {"state_dict": ...} but runs code (touches marker) when fully unpickled."""
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(1)}, "payload": _Payload(marker)}, file)
    return file

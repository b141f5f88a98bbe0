"""Broken files for the bad-input tests, each made from a good fixture: wrong LoRA widths, NaN weights,
layers the model lacks, truncated safetensors, pickles that are not state dicts, bad JSON and text."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _up_keys(state: dict) -> list[str]:
    return sorted(k for k in state if k.endswith(".lora_up.weight"))


def lora_with_wrong_widths(source: Path, target: Path, layers: int = 3) -> Path:
    """The LoRA with `layers` of its up factors 8 rows too wide (key names still match the model)."""
    state = load_file(str(source))
    for key in _up_keys(state)[:layers]:
        up = state[key]
        state[key] = torch.cat([up, torch.zeros(8, up.shape[1], dtype=up.dtype)])
    save_file(state, str(target))
    return target


def lora_with_nan(source: Path, target: Path) -> Path:
    """The LoRA with one NaN in one down factor."""
    state = load_file(str(source))
    key = sorted(k for k in state if k.endswith(".lora_down.weight"))[0]
    state[key] = state[key].clone()
    state[key][0, 0] = float("nan")
    save_file(state, str(target))
    return target


def _lora_plus_layer(source: Path, target: Path, key: str, width: int) -> Path:
    """The LoRA plus one zero layer `key` of width x width."""
    state = load_file(str(source))
    rank = state[_up_keys(state)[0]].shape[1]
    state[f"{key}.lora_down.weight"] = torch.zeros(rank, width)
    state[f"{key}.lora_up.weight"] = torch.zeros(width, rank)
    save_file(state, str(target))
    return target


def lora_with_extra_layers(source: Path, target: Path) -> Path:
    """The LoRA plus one layer the model does not have (an SDXL-only block name on SD1.5)."""
    return _lora_plus_layer(source, target, "lora_unet_down_blocks_7_attentions_1_transformer_blocks_9_attn1_to_q", 64)


def lora_with_text_encoder(source: Path, target: Path) -> Path:
    """The LoRA plus text-encoder keys (kohya lora_te_*), which the guider deliberately does not apply."""
    return _lora_plus_layer(source, target, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", 32)


def truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    """The first `keep` fraction of a file's bytes (an interrupted download)."""
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[: int(len(data) * keep)])
    return target


def pickle_of(target: Path, obj) -> Path:
    """A torch.save pickle of obj (a bare tensor, a list...), loadable with weights_only=True."""
    torch.save(obj, str(target))
    return target


def text_file(target: Path, data: bytes) -> Path:
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(data)
    return target


NOT_JSON = b'{"model_type": "clip", '  # cut short
NOT_UTF8 = "caf\u00e9 on a table\n".encode("latin-1")

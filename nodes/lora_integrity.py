"""LoRA integrity: a tuned model is the whole LoRA or an error, never a silently partial one.

ComfyUI skips LoRA keys it cannot map ("lora key not loaded") and patches whose shape does not fit
("ERROR lora ...", "WEIGHT NOT MERGED") with a console line only. Before AIG samples, every patch is
checked against the model it will patch: plain LoRA factors by their shapes and values (cheap, no
weight copy), any other patch type by a dry run of ComfyUI's own calculate_weight on a float32 copy
of that one weight, with ComfyUI's warnings captured.
"""

from __future__ import annotations

import contextlib
import logging
import math

import comfy.lora
import comfy.lora_convert
import comfy.utils
import torch
from comfy.weight_adapter.lora import LoRAAdapter

from ..core.aig import AIGError
from ..core.files import read_state_dict

TEXT_ENCODER_PREFIXES = ("lora_te", "text_encoder", "te1.", "te2.", "te.", "lora_clip", "clip_", "t5",
                         "text_model", "cond_stage_model", "conditioner.")
NOT_LOADED = "lora key not loaded: "


class _Captured(logging.Handler):
    """Collects WARNING and ERROR messages (ComfyUI logs through the root logger)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_warnings():
    handler = _Captured()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


def _patch_key(k):
    """(model key, offset, function) of a loaded patch dict key (str or tuple)."""
    return (k, None, None) if isinstance(k, str) else (k[0], k[1], k[2] if len(k) > 2 else None)


def _module_of(lora_key: str) -> str:
    """The layer a LoRA tensor belongs to: 'x.lora_up.weight', 'x.alpha', 'x.lora_A.weight' -> 'x'."""
    if ".lora" in lora_key:
        return lora_key.rsplit(".lora", 1)[0]
    return lora_key.rsplit(".", 1)[0]


def lora_file_patches(base, lora_path: str, strength: float):
    """Patch entries of a LoRA file for the base model; AIGError when any diffusion-model key cannot be used."""
    lora, _ = read_state_dict(lora_path, "a LoRA (lora_up/lora_down or lora_A/lora_B tensors)")
    lora = comfy.lora_convert.convert_lora(lora)
    key_map = comfy.lora.model_lora_keys_unet(base.model, {})
    with captured_warnings() as messages:
        loaded = comfy.lora.load_lora(lora, key_map, log_missing=True)
    unmapped = [m[len(NOT_LOADED):] for m in messages if m.startswith(NOT_LOADED)]
    unmapped = [k for k in unmapped if not k.startswith(TEXT_ENCODER_PREFIXES)]
    model_keys = set(base.model.state_dict().keys())
    entries, absent = [], []
    for k, value in loaded.items():
        key, offset, function = _patch_key(k)
        if key in model_keys:
            entries.append((key, (float(strength), value, 1.0, offset, function)))
        else:
            absent.append(key)
    name = lora_path.replace("\\", "/").rsplit("/", 1)[-1]
    if not entries:
        raise AIGError(
            f"LoRA '{name}' matches none of the model's weights: it was made for another architecture "
            "or uses key names ComfyUI does not map (e.g. peft/diffusers attention keys). Use a kohya-format "
            "LoRA for this model."
        )
    missing = sorted({_module_of(k) for k in unmapped} | set(absent))
    if missing:
        raise AIGError(
            f"LoRA '{name}': {len(missing)} of its diffusion-model layers match no layer of this model "
            f"(e.g. {missing[0]}), so only part of it would apply. It was made for another model or architecture; "
            "use a LoRA trained for this checkpoint."
        )
    return entries


def _target_shape(weight: torch.Tensor, offset) -> tuple[int, ...] | None:
    """Shape of the part of weight a patch writes (offset = (dim, start, length)); None if out of range."""
    shape = list(weight.shape)
    if offset is None:
        return tuple(shape)
    dim, start, length = offset
    if dim >= len(shape) or start < 0 or start + length > shape[dim]:
        return None
    shape[dim] = length
    return tuple(shape)


def _plain_lora_problem(adapter: LoRAAdapter, target: tuple[int, ...]) -> str | None:
    """Why up @ down cannot be added to a weight of shape target (or None); non-finite factors included."""
    up, down, alpha, mid, dora, reshape = adapter.weights[:6]
    for tensor in (up, down, mid, dora):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            return "its weights contain NaN or inf"
    if alpha is not None and not math.isfinite(float(alpha)):
        return "its alpha is NaN or inf"
    want = tuple(reshape) if reshape is not None else target
    if up.flatten(1).shape[1] != down.shape[0] or up.shape[0] * math.prod(down.shape[1:]) != math.prod(want):
        return f"up {tuple(up.shape)} x down {tuple(down.shape)} does not fit the weight {target}"
    return None


def _dry_run_problem(weight: torch.Tensor, key: str, patch) -> str | None:
    """ComfyUI's calculate_weight on a float32 copy of one weight: its warnings, or a non-finite result."""
    copy = weight.detach().to(device="cpu", dtype=torch.float32, copy=True)
    with captured_warnings() as messages:
        out = comfy.lora.calculate_weight([patch], copy, key, intermediate_dtype=torch.float32)
    if messages:
        return messages[0][:200]
    if not bool(torch.isfinite(out).all()):
        return "the patched weight contains NaN or inf"
    return None


def patch_problem(model, key: str, patch) -> str | None:
    """Why one (strength, value, strength_model, offset, function) patch on key cannot apply, or None."""
    try:
        weight = comfy.utils.get_attr(model, key)
    except AttributeError:
        return "the model has no such layer"
    strength, value, _, offset, function = patch
    if not math.isfinite(float(strength)):
        return f"its strength {strength} is not finite"
    target = _target_shape(weight, offset)
    if target is None:
        return f"its slice {offset} lies outside the weight {tuple(weight.shape)}"
    if isinstance(value, LoRAAdapter) and value.weights[3] is None and value.weights[4] is None and function is None:
        return _plain_lora_problem(value, target)
    return _dry_run_problem(weight, key, patch)


def check_patches(model, entries, what: str) -> None:
    """AIGError naming how many patches cannot apply and one of them; entries = [(key, patch)]."""
    problems = [(key, reason) for key, patch in entries if (reason := patch_problem(model, key, patch))]
    if problems:
        key, reason = problems[0]
        raise AIGError(
            f"{what}: {len(problems)} of {len(entries)} LoRA layers cannot be applied to this model "
            f"(e.g. {key}: {reason}). ComfyUI would skip them and sample with a partial LoRA. Use a LoRA made "
            "for this checkpoint (same architecture and layer widths), with finite weights."
        )

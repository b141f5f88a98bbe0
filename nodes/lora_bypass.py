"""The "bypass" route of the AIG guider: the LoRA stays unmerged and both branches share one batched forward.

ComfyUI's calc_cond_batch concatenates the base and the tuned conditions into one UNet call (they carry no
hooks, so they batch together) and records which cond list entry each chunk came from in
transformer_options["cond_or_uncond"]. An APPLY_MODEL wrapper turns that into the rows of the tuned branch,
and a forward hook on every LoRA-targeted Linear/Conv2d adds scale * up(down(x)) to those rows
(comfy_aig.core.lora_bypass). No weight is copied or changed; the hooks live only while sampling.

Plain LoRA patches (kohya/diffusers/peft up-down pairs, with or without alpha) run this way, also on one
slice of a fused projection (ComfyUI's offset patches for Flux / SD3 qkv from diffusers keys: the delta is
added to those output features only). LoCon with a mid (Tucker) factor, DoRA, LoHa, LoKr, OFT, weight
functions and strength_model != 1 do not; for them `plan_bypass` returns the reason and the guider uses the
weight-hook route.
"""

from __future__ import annotations

from contextlib import contextmanager

import comfy.patcher_extension
import comfy.weight_adapter
import torch

from ..core.aig import AIGError
from ..core.lora_bypass import (
    ConvGeometry,
    LoraFactors,
    add_rows,
    cast_factors,
    factors_for_layer,
    select_rows,
    summed_delta,
    tuned_rows,
)

WRAPPER_KEY = "comfy_aig_lora_bypass"


def _layer_geometry(module) -> tuple[ConvGeometry | None, str | None]:
    """(conv geometry or None for Linear, reason the layer cannot take an unmerged LoRA or None)."""
    if isinstance(module, torch.nn.Linear):
        return None, None
    if isinstance(module, torch.nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros":
            return None, "a grouped or non-zero-padded Conv2d"
        return ConvGeometry(tuple(module.stride), module.padding, tuple(module.dilation)), None
    return None, f"a {type(module).__name__} layer"


def _patch_factors(model, key, patch) -> tuple[LoraFactors | None, str | None]:
    """LoraFactors for one ModelPatcher patch entry, or the reason it needs merged weights."""
    strength, adapter, strength_model, offset, function = patch
    if not isinstance(adapter, comfy.weight_adapter.LoRAAdapter):
        return None, f"{key} is a {getattr(adapter, 'name', type(adapter).__name__)} patch, not a plain LoRA"
    up, down, alpha, mid, dora_scale, reshape = adapter.weights
    if mid is not None or dora_scale is not None or reshape is not None:
        return None, f"{key} has a LoCon mid factor, DoRA scale or reshape"
    if function is not None or strength_model != 1.0:
        return None, f"{key} has a weight function or strength_model != 1"
    if offset is not None and offset[0] != 0:
        return None, f"{key} has an offset along dimension {offset[0]} (only output-feature slices run unmerged)"
    if not key.endswith(".weight"):
        return None, f"{key} is not a layer weight"
    try:
        module = model.get_submodule(key[: -len(".weight")])
    except AttributeError:
        return None, f"{key} names no layer of the model"
    conv, reason = _layer_geometry(module)
    if reason:
        return None, f"{key} belongs to {reason}"
    scale = float(strength) * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
    out_slice = None if offset is None else (int(offset[1]), int(offset[2]))
    factors = factors_for_layer(up, down, module.weight.shape, scale, conv, out_slice)
    if factors is None:
        where = "" if out_slice is None else f" rows {out_slice[0]}..{sum(out_slice)} of"
        return None, (f"{key}: LoRA shapes {tuple(up.shape)} x {tuple(down.shape)} do not fit{where} "
                      f"{tuple(module.weight.shape)}")
    return factors, None


def plan_bypass(model, entries) -> tuple[LoraBypass | None, str]:
    """(LoraBypass, '') for patches that all run unmerged on `model` (a BaseModel), else (None, the first reason)."""
    layers: dict[str, list[LoraFactors]] = {}
    for key, patch in entries:
        factors, reason = _patch_factors(model, key, patch)
        if factors is None:
            return None, reason
        layers.setdefault(key[: -len(".weight")], []).append(factors)
    return LoraBypass(layers), ""


class LoraBypass:
    """Unmerged LoRA factors per layer path; while attached, each forward adds them to the tuned rows."""

    def __init__(self, layers: dict[str, list[LoraFactors]]):
        self.layers = layers
        self._rows = None  # rows of the current forward that belong to the tuned branch (None: none)
        self._n_rows = 0
        self._cast: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        """Number of LoRA patches (a layer carries several when LoRAs are stacked)."""
        return sum(len(f) for f in self.layers.values())

    def _factors_on(self, path, device, dtype):
        """(down, scale * up) of every LoRA on a layer, cast once per device/dtype."""
        key = (path, device, dtype)
        if key not in self._cast:
            self._cast[key] = [cast_factors(f, device, dtype) for f in self.layers[path]]
        return self._cast[key]

    def _forward_hook(self, path):
        factors = self.layers[path]

        def hook(module, args, output):
            rows = self._rows
            if rows is None:
                return None
            x = args[0]
            if x.shape[0] != self._n_rows:
                raise AIGError(
                    f"unmerged LoRA: layer {path} saw a batch of {x.shape[0]} rows, the model call had "
                    f"{self._n_rows}; this model reshapes its batch. Set lora_route to 'hooks'."
                )
            pairs = self._factors_on(path, x.device, x.dtype)
            delta = summed_delta(select_rows(x, rows), factors, pairs, module.weight.shape[0])
            return add_rows(output, rows, delta)

        return hook

    def _apply_model_wrapper(self, tuned_indices):
        def wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):  # noqa: B006
            cond_indices = transformer_options.get("cond_or_uncond")
            if cond_indices is None:
                raise AIGError("unmerged LoRA: ComfyUI did not say which conditions are batched; set lora_route to 'hooks'.")
            rows = tuned_rows(cond_indices, x.shape[0], tuned_indices)
            if isinstance(rows, torch.Tensor):
                rows = rows.to(x.device)  # once per call, not once per layer (no host-device copy per layer)
            self._rows, self._n_rows = rows, x.shape[0]
            try:
                return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
            finally:
                self._rows = None

        return wrapper

    @contextmanager
    def attached(self, model, model_options: dict, tuned_indices):
        """Hooks on `model`'s LoRA layers and an APPLY_MODEL wrapper in `model_options`, removed on exit."""
        handles = [model.get_submodule(path).register_forward_hook(self._forward_hook(path)) for path in self.layers]
        wrapper = self._apply_model_wrapper(frozenset(tuned_indices))
        comfy.patcher_extension.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, wrapper, model_options, is_model_options=True)
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            wrappers = model_options["transformer_options"]["wrappers"][comfy.patcher_extension.WrappersMP.APPLY_MODEL]
            wrappers[WRAPPER_KEY].remove(wrapper)
            self._rows, self._cast = None, {}

"""Unmerged ("bypass") LoRA math: W' x = W x + s * up(down(x)) (LoRA, Hu et al. 2021, eq. 3), row-selective.

With the LoRA kept out of the weights, the base and the tuned branch of AIG can share one batched forward:
every LoRA-targeted layer adds s * up(down(x)) to the rows of the tuned branch only. Pure torch, no ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ConvGeometry:
    """Stride/padding/dilation of the Conv2d a LoRA is attached to (the down projection reuses them)."""

    stride: tuple
    padding: tuple | str
    dilation: tuple


@dataclass(frozen=True)
class LoraFactors:
    """One LoRA on one layer: delta W = scale * up @ down.

    Linear: down [r, in], up [out, r].  Conv2d: down [r, in, kh, kw], up [out, r, 1, 1].
    scale = strength * alpha / r (alpha missing: scale = strength), as ComfyUI merges it.
    out_slice (Linear only): (start, size) of the output features the LoRA writes, for a LoRA on one part of a
    fused projection (Flux / SD3 qkv, ComfyUI's offset patches); then up is [size, r].
    """

    down: torch.Tensor
    up: torch.Tensor
    scale: float
    conv: ConvGeometry | None = None
    out_slice: tuple[int, int] | None = None


def factors_for_layer(up: torch.Tensor, down: torch.Tensor, weight_shape, scale: float,
                      conv: ConvGeometry | None, out_slice: tuple[int, int] | None = None) -> LoraFactors | None:
    """Reshape ComfyUI's (up, down) pair to the layer's geometry; None when the shapes cannot be a plain LoRA."""
    out_dim, rank = up.shape[0], down.shape[0]
    in_numel = int(torch.Size(weight_shape[1:]).numel())
    expected_out = weight_shape[0] if out_slice is None else out_slice[1]
    if up.numel() != out_dim * rank or down.numel() != rank * in_numel or out_dim != expected_out:
        return None
    if out_slice is not None and (conv is not None or out_slice[0] < 0 or sum(out_slice) > weight_shape[0]):
        return None
    if conv is None:
        if len(weight_shape) != 2:
            return None
        return LoraFactors(down.reshape(rank, in_numel), up.reshape(out_dim, rank), float(scale), None, out_slice)
    if len(weight_shape) != 4:
        return None
    return LoraFactors(down.reshape(rank, *weight_shape[1:]), up.reshape(out_dim, rank, 1, 1), float(scale), conv)


def cast_factors(factors: LoraFactors, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, scale * up) on a device/dtype: the scale is folded into up once, not applied per call."""
    return factors.down.to(device, dtype), (factors.up * factors.scale).to(device, dtype)


def lora_delta(x: torch.Tensor, conv: ConvGeometry | None, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """up(down(x)) for x [..., in] (Linear, conv None) or [N, in, H, W] (Conv2d); (down, up) from cast_factors."""
    if conv is None:
        return F.linear(F.linear(x, down), up)  # [..., out]
    hidden = F.conv2d(x, down, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)  # [N, r, H', W']
    return F.conv2d(hidden, up)  # [N, out, H', W']


def summed_delta(x: torch.Tensor, factors, pairs, out_features: int) -> torch.Tensor:
    """Sum of up(down(x)) over the LoRAs stacked on one layer [..., out]; a LoRA with an out_slice adds to its
    slice of the output features only (the first full-width result is reused as the accumulator)."""
    total = None
    for f, (down, up) in zip(factors, pairs):
        delta = lora_delta(x, f.conv, down, up)
        if f.out_slice is not None:
            start, size = f.out_slice
            if total is None:
                total = delta.new_zeros(*delta.shape[:-1], out_features)
            total[..., start:start + size] += delta
        else:
            total = delta if total is None else total.add_(delta)
    return total


def tuned_rows(cond_indices, n_rows: int, tuned_indices) -> slice | torch.Tensor | None:
    """Rows of a batched forward that belong to the tuned branch.

    ComfyUI concatenates equal-sized chunks, chunk k coming from cond list entry cond_indices[k]; rows of
    chunk k are [k * n_rows / len(cond_indices), (k + 1) * ...). Returns None (no tuned rows), slice(None)
    (all rows) or a LongTensor of row indices.
    """
    chunks = len(cond_indices)
    if chunks == 0 or n_rows % chunks:
        raise ValueError(f"{n_rows} rows cannot be split into {chunks} equal condition chunks")
    size = n_rows // chunks
    flags = [index in tuned_indices for index in cond_indices]
    if not any(flags):
        return None
    if all(flags):
        return slice(None)
    return torch.tensor([k * size + i for k, flag in enumerate(flags) if flag for i in range(size)], dtype=torch.long)


def add_rows(output: torch.Tensor, rows: slice | torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """output with delta added on `rows` (a new tensor; delta has len(rows) rows)."""
    delta = delta.to(output.dtype)
    if isinstance(rows, slice):
        return output + delta
    return output.index_add(0, rows.to(output.device), delta)


def select_rows(x: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """The rows of x that a LoRA delta is computed for."""
    return x if isinstance(rows, slice) else x.index_select(0, rows.to(x.device))

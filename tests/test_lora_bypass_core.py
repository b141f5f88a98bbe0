"""Unmerged LoRA math (core/lora_bypass.py) against merged weights, in float64 so only the algebra is tested."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comfy_aig.core.lora_bypass import (
    ConvGeometry,
    add_rows,
    cast_factors,
    factors_for_layer,
    lora_delta,
    select_rows,
    summed_delta,
    tuned_rows,
)

DT = torch.float64


def _pair(out_dim, rank, in_shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    up = torch.randn(out_dim, rank, generator=g, dtype=DT)
    down = torch.randn(rank, *in_shape, generator=g, dtype=DT)
    return up, down


def test_linear_delta_equals_merged_weight():
    g = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(6, 5, generator=g, dtype=DT), torch.randn(6, generator=g, dtype=DT)
    up, down = _pair(6, 3, (5,))
    factors = factors_for_layer(up, down, weight.shape, scale=0.7, conv=None)
    x = torch.randn(4, 9, 5, generator=g, dtype=DT)  # [N, tokens, in]
    merged = F.linear(x, weight + 0.7 * up @ down, bias)
    bypass = F.linear(x, weight, bias) + lora_delta(x, None, *cast_factors(factors, "cpu", DT))
    assert torch.allclose(bypass, merged, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, "same", 1)])
def test_conv_delta_equals_merged_weight(stride, padding, dilation):
    g = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(8, 4, 3, 3, generator=g, dtype=DT), torch.randn(8, generator=g, dtype=DT)
    up, down = _pair(8, 2, (4, 3, 3))
    # ComfyUI's merge: weight + scale * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    merged_weight = weight + 0.5 * (up @ down.flatten(1)).reshape(weight.shape)
    geometry = ConvGeometry((stride, stride), padding if isinstance(padding, str) else (padding, padding),
                            (dilation, dilation))
    factors = factors_for_layer(up.reshape(8, 2, 1, 1), down, weight.shape, scale=0.5, conv=geometry)
    x = torch.randn(3, 4, 10, 10, generator=g, dtype=DT)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    merged = F.conv2d(x, merged_weight, bias, **args)
    bypass = F.conv2d(x, weight, bias, **args) + lora_delta(x, geometry, *cast_factors(factors, "cpu", DT))
    assert torch.allclose(bypass, merged, rtol=1e-12, atol=1e-12)


def test_linear_shaped_lora_on_1x1_conv():
    """kohya may store a 1x1 conv's LoRA as 2-D matrices; ComfyUI reshapes the product, so must we."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(6, 4, 1, 1, generator=g, dtype=DT)
    up, down = _pair(6, 2, (4,))
    factors = factors_for_layer(up, down, weight.shape, scale=1.0, conv=ConvGeometry((1, 1), (0, 0), (1, 1)))
    assert factors.down.shape == (2, 4, 1, 1) and factors.up.shape == (6, 2, 1, 1)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=DT)
    merged = F.conv2d(x, weight + (up @ down).reshape(weight.shape))
    delta = lora_delta(x, factors.conv, *cast_factors(factors, "cpu", DT))
    assert torch.allclose(F.conv2d(x, weight) + delta, merged)


def test_stacked_loras_sum():
    """Two LoRAs on one layer add up: W + s1 up1 down1 + s2 up2 down2."""
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(6, 5, generator=g, dtype=DT)
    pairs = [_pair(6, 3, (5,), seed=5), _pair(6, 2, (5,), seed=6)]
    factors = [factors_for_layer(up, down, weight.shape, scale, None) for (up, down), scale in zip(pairs, (0.5, -1.5))]
    x = torch.randn(7, 5, generator=g, dtype=DT)
    merged = F.linear(x, weight + 0.5 * pairs[0][0] @ pairs[0][1] - 1.5 * pairs[1][0] @ pairs[1][1])
    delta = summed_delta(x, factors, [cast_factors(f, "cpu", DT) for f in factors], weight.shape[0])
    assert torch.allclose(F.linear(x, weight) + delta, merged, rtol=1e-12, atol=1e-12)


def test_sliced_loras_on_a_fused_projection_equal_the_merged_slices():
    """Flux / SD3 fused qkv: a LoRA on q (rows 0..4) and one on v (rows 8..12) of a [12, 5] weight, plus a
    full-width one, equal W with each delta merged into its rows (ComfyUI's offset patches)."""
    g = torch.Generator().manual_seed(8)
    weight = torch.randn(12, 5, generator=g, dtype=DT)
    (uq, dq), (uv, dv), (uf, df) = _pair(4, 2, (5,), seed=9), _pair(4, 3, (5,), seed=10), _pair(12, 2, (5,), seed=11)
    factors = [factors_for_layer(uq, dq, weight.shape, 0.5, None, (0, 4)),
               factors_for_layer(uv, dv, weight.shape, -2.0, None, (8, 4)),
               factors_for_layer(uf, df, weight.shape, 0.25, None)]
    merged_weight = weight.clone()
    merged_weight[0:4] += 0.5 * uq @ dq
    merged_weight[8:12] += -2.0 * uv @ dv
    merged_weight += 0.25 * uf @ df
    x = torch.randn(3, 7, 5, generator=g, dtype=DT)  # [B, L, in]: a transformer's tokens
    delta = summed_delta(x, factors, [cast_factors(f, "cpu", DT) for f in factors], weight.shape[0])
    assert torch.allclose(F.linear(x, weight) + delta, F.linear(x, merged_weight), rtol=1e-12, atol=1e-12)
    assert factors_for_layer(uq, dq, weight.shape, 1.0, None, (10, 4)) is None  # the slice leaves the weight
    assert factors_for_layer(uq, dq, weight.shape, 1.0, None, (0, 5)) is None  # up does not fit the slice


def test_shapes_that_do_not_fit_are_refused():
    up, down = _pair(6, 3, (5,))
    assert factors_for_layer(up, down, (6, 4), 1.0, None) is None  # wrong fan-in
    assert factors_for_layer(up, down, (7, 5), 1.0, None) is None  # wrong fan-out
    assert factors_for_layer(up, down, (6, 5, 1, 1), 1.0, None) is None  # a conv weight without conv geometry
    conv = ConvGeometry((1, 1), (0, 0), (1, 1))
    assert factors_for_layer(up, down, (6, 5), 1.0, conv) is None  # conv geometry on a linear weight


def test_tuned_rows_follow_comfyui_chunk_order():
    tuned = {2, 3}
    assert torch.equal(tuned_rows([0, 1, 2, 3], 8, tuned), torch.arange(4, 8))
    assert torch.equal(tuned_rows([3, 0, 2, 1], 8, tuned), torch.tensor([0, 1, 4, 5]))
    assert tuned_rows([0, 1], 4, tuned) is None
    assert tuned_rows([2, 3], 6, tuned) == slice(None)
    with pytest.raises(ValueError, match="7 rows cannot be split into 2"):
        tuned_rows([0, 2], 7, tuned)


def test_rows_only_touch_their_rows():
    output = torch.zeros(6, 3)
    rows = torch.tensor([1, 4])
    x = torch.arange(18.0).reshape(6, 3)
    assert torch.equal(select_rows(x, rows), x[[1, 4]])
    result = add_rows(output, rows, torch.ones(2, 3))
    assert torch.equal(result.sum(1), torch.tensor([0.0, 3, 0, 0, 3, 0]))
    assert output.abs().sum() == 0  # a new tensor: the layer's own output is left alone
    assert torch.equal(add_rows(output, slice(None), torch.ones(6, 3)), torch.ones(6, 3))
    assert select_rows(x, slice(None)) is x

"""Differentiable CLIP preprocessing as torch ops (no PIL round trip), matching the reference pipelines.

- ``shortest``: resize the shortest side to S (bicubic, antialiased), center crop S x S
  (OpenAI CLIP / transformers ``CLIPImageProcessor``; PickScore, CLIPScore, LAION aesthetic).
- ``longest``: resize the longest side to S, zero-pad to S x S centred
  (HPSv2 ``ResizeMaxSize`` / OpenCLIP ``resize_mode='longest'``).
Then normalise with the OpenAI mean/std. Antialiased bicubic uses PIL's kernel (a = -0.5); pixels
are clamped to 0..1 after resizing as PIL clips to uint8; results stay within about 0.016 of PIL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest")


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic antialiased resize of [B, 3, H, W] to [B, 3, height, width], clamped to 0..1."""
    if images.shape[-2:] == (height, width):
        return images
    out = F.interpolate(images, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0)


def resize_shortest_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Shortest side -> size (long side floor(size * long / short)), then center crop [B, 3, size, size]."""
    h, w = images.shape[-2:]
    if h <= w:
        new_h, new_w = size, max(size, int(size * w / h))
    else:
        new_h, new_w = max(size, int(size * h / w)), size
    x = _resize(images, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2  # transformers center_crop rule
    return x[..., top:top + size, left:left + size]


def resize_longest_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """Longest side -> size (short side round(short * size / long)), zero-pad centred to [B, 3, size, size]."""
    h, w = images.shape[-2:]
    ratio = max(h, w) / size
    new_h, new_w = max(1, round(h / ratio)), max(1, round(w / ratio))
    x = _resize(images, new_h, new_w)
    pad_h, pad_w = size - new_h, size - new_w
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


def normalize(images: torch.Tensor, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """(x - mean) / std per channel of [B, 3, H, W]."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


def clip_preprocess(images: torch.Tensor, size: int, mode: str = "shortest", mean=OPENAI_MEAN,
                    std=OPENAI_STD) -> torch.Tensor:
    """Images [B, 3, H, W] in 0..1 -> normalised pixel values [B, 3, size, size] (float32, differentiable)."""
    if mode == "shortest":
        x = resize_shortest_center_crop(images, size)
    elif mode == "longest":
        x = resize_longest_pad(images, size)
    else:
        raise ValueError(f"unknown resize mode {mode!r}; use one of {RESIZE_MODES}.")
    return normalize(x, mean, std)

"""Image features for diversity metrics: downsampled pixels, and FID Inception-v3 pool features.

``pixel_features`` is the model-free feature space (docs/design.md section 5). Inception features come from
a locally present FID Inception weights file (never downloaded).

The standard FID network is the TF-ported Inception-v3 whose PyTorch state dict ships as
``pt_inception-2015-12-05-*.pth`` (pytorch-fid). It is torchvision's ``Inception3`` layout with 1008
classes and no aux head, except that the average pools inside Mixed_5b-5d, 6b-6e and 7b exclude padding
and Mixed_7c pools with max instead of average (Heusel et al. 2017 used the TF graph). Features are the
2048-d global average pool ("pool3") of images resized to 299x299 bilinearly and scaled to [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models.inception import (
    BasicConv2d,
    Inception3,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from . import files
from .errors import AIGInputError

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's label space


class FeatureModelError(AIGInputError):
    """A feature-model file that cannot be used (the message names the problem and the fix)."""


def feature_source_name(space: str, detail: object, dim: int | None = None) -> str:
    """The feature space every evaluation record stores (AIGImageFeatures and `comfy-aig evaluate` alike; one
    set holds one space): "pixels:16", "inception:pool3:2048", "reward:pickscore:1024", "clip_vision:224:768"."""
    return ":".join(str(part) for part in (space, detail, dim) if part is not None)


def reward_kind(model) -> str:
    """The kind name of a loaded reward model, for feature_source_name."""
    return getattr(model, "kind", type(model).__name__)


def pixel_features(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Area-downsampled RGB pixels: [B, 3, H, W] -> [B, 3 * size * size] (mean over each output cell)."""
    return F.interpolate(images.float(), size=(size, size), mode="area").flatten(1)


class _FidInceptionA(InceptionA):
    """InceptionA with an average pool that ignores padding (TF 'SAME' pooling)."""

    def _forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return [self.branch1x1(x), b5, b3, pool]


class _FidInceptionC(InceptionC):
    """InceptionC with an average pool that ignores padding."""

    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return [self.branch1x1(x), b7, d, pool]


class _FidInceptionE(InceptionE):
    """InceptionE whose pool branch is a padding-free average (Mixed_7b) or a max pool (Mixed_7c)."""

    def __init__(self, in_channels: int, conv_block=None, pool: str = "avg"):
        super().__init__(in_channels, conv_block)
        self.pool = pool

    def _forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), b3, d, self.branch_pool(pooled)]


def build_fid_inception() -> Inception3:
    """The FID Inception-v3 architecture with random weights (state-dict layout of the pytorch-fid file)."""
    blocks = [BasicConv2d, _FidInceptionA, InceptionB, _FidInceptionC, InceptionD, _FidInceptionE, InceptionAux]
    net = Inception3(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=False,
                     inception_blocks=blocks)
    net.Mixed_7c = _FidInceptionE(2048, pool="max")  # the last block max-pools in the TF graph
    return net.eval()


class InceptionFeatures(torch.nn.Module):
    """images [B, 3, H, W] in 0..1 -> pool3 features [B, 2048] of the FID Inception network."""

    def __init__(self, net: Inception3):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise FeatureModelError(f"images must be [B, 3, H, W] in 0..1, got shape {tuple(images.shape)}.")
        p = next(self.net.parameters())
        x = images.to(device=p.device, dtype=p.dtype)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0  # the TF graph's input range
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1, n.Conv2d_3b_1x1,
                      n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b,
                      n.Mixed_6c, n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.avgpool):
            x = layer(x)
        return torch.flatten(x, 1).float()  # [B, 2048]


def load_fid_inception(path: Path | str, device: torch.device | str | None = None) -> InceptionFeatures:
    """FID Inception pool-feature extractor from a local pt_inception-2015-12-05 file (strict key check)."""
    state = files.read_state_dict(path, "the FID Inception-v3 state dict")[0]
    net = build_fid_inception()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise FeatureModelError(
            f"{Path(path).name} is not the FID Inception-v3 state dict (pytorch-fid pt_inception-2015-12-05): "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} with other shapes {wrong[:3]}."
        )
    net.load_state_dict(state, strict=True)
    model = InceptionFeatures(net).eval().requires_grad_(False)
    return model.to(device) if device is not None else model

"""The demo's differentiable toy reward: "yellowness" of the whole image, on the real RewardModel contract.

r(x) = mean over pixels of (min(R, G) - B), in [-1, 1]: a yellow pixel scores about 0.75, grey 0,
blue or cyan about -0.75. It prefers one of the world's six colour modes, and since it reads
the whole image it can also be hacked by painting the background yellow (docs/design.md section 5):
the honest demonstration of reward hacking. Prompt-free, like the LAION aesthetic scorer.

Features for diversity metrics are the pixels the reward reads, average-pooled to 8x8 (192-d):
cheap, deterministic and sensitive to colour, shape, size and position. The demo centres them
on the base model's samples and divides by one global scale (never per dimension).
"""

from __future__ import annotations

import torch

from ...core.features import pixel_features
from ...core.rewards.base import RewardModel
from ..rewards import yellowness

FEATURE_GRID = 8


class YellownessReward(RewardModel):
    """r(x) = mean_pixels(min(R, G) - B) for images [B, 3, H, W] in 0..1; features: 8x8 pooled pixels."""

    kind = "demo-yellowness"
    needs_prompts = False

    def score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores [b] of one chunk [b, 3, H, W]: training.rewards.yellowness."""
        return yellowness(images)

    def features_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Average-pooled pixels [b, 3 * 8 * 8] of one chunk (area downsampling = adaptive average pool)."""
        return pixel_features(images, FEATURE_GRID)


def normalise_features(ref: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Centre every set on the mean of `ref` and divide by one global scale (RMS of centred ref) -> [ref, ...]."""
    mean = ref.mean(dim=0, keepdim=True)
    scale = (ref - mean).pow(2).mean().sqrt().clamp_min(1e-8)
    return [(x - mean) / scale for x in (ref, *others)]

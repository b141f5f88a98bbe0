"""The demo's differentiable toy rewards on the real RewardModel contract: "yellowness" and a colour classifier.

r(x) = mean over pixels of (min(R, G) - B), in [-1, 1]: a yellow pixel scores about 0.75, grey 0,
blue or cyan about -0.75. It prefers one of the world's six colour modes, and since it reads
the whole image it can also be hacked by painting the background yellow (docs/design.md section 5):
the honest demonstration of reward hacking. Prompt-free, like the LAION aesthetic scorer.

Features for diversity metrics are the pixels the reward reads, average-pooled to 8x8 (192-d):
cheap, deterministic and sensitive to colour, shape, size and position. The demo centres them
on the base model's samples and divides by one global scale (never per dimension).

The second reward, ClassifierReward ("classifier-blue"), is the probability that the demo's feature
net (featnet.py, trained on varied backgrounds, tints, noise and speckle) gives one colour class.
With the shape-only training prompts ("a circle") every colour is allowed, so the way to hack it
is mode collapse (every image one colour) rather than a texture over the image.
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


class ClassifierReward(RewardModel):
    """r(x) = softmax probability of one colour (or shape) class under the feature net's head; features: its penultimate layer."""

    needs_prompts = False

    def __init__(self, head: str = "colour", target: str = "blue", net=None):
        super().__init__()
        from .featnet import load_feature_net
        from .world import COLOUR_NAMES, SHAPES

        names = {"colour": COLOUR_NAMES, "shape": SHAPES}[head]
        if target not in names:
            raise ValueError(f"unknown {head} '{target}'; valid: {', '.join(names)}")
        self.head, self.target, self.index = head, target, names.index(target)
        self.kind = f"demo-classifier-{target}"
        self.net = net if net is not None else load_feature_net()

    def score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """p(head = target | image) [b], differentiable w.r.t. the pixels."""
        logits = self.net.heads[self.head](self.net.features(images))
        return logits.softmax(dim=1)[:, self.index]

    def features_batch(self, images: torch.Tensor) -> torch.Tensor:
        """The feature net's penultimate features [b, FEATURE_DIM]."""
        return self.net.features(images)


class FeatureNetFeatures(RewardModel):
    """Not a reward: the feature net's penultimate features on the RewardModel contract (validation, chunks)."""

    kind = "demo-feature-net"
    needs_prompts = False

    def __init__(self, net=None):
        super().__init__()
        from .featnet import load_feature_net

        self.net = net if net is not None else load_feature_net()

    def features_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)


REWARDS = {
    "yellowness": ("yellowness = mean(min(R, G) - B)", YellownessReward),
    "classifier-blue": ("p(colour = blue) under the demo feature net's colour head",
                        lambda: ClassifierReward("colour", "blue")),
}


def make_reward(name: str) -> RewardModel:
    """A demo reward by name (REWARDS)."""
    if name not in REWARDS:
        raise ValueError(f"unknown demo reward '{name}'; valid: {', '.join(REWARDS)}")
    return REWARDS[name][1]()


def normalise_features(ref: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Centre every set on the mean of `ref` and divide by one global scale (RMS of centred ref) -> [ref, ...]."""
    mean = ref.mean(dim=0, keepdim=True)
    scale = (ref - mean).pow(2).mean().sqrt().clamp_min(1e-8)
    return [(x - mean) / scale for x in (ref, *others)]

"""Reward construction for training: local reward models, toy colour rewards, weighted sums.

``build_reward(terms, device)`` turns ``[{source, weight, kind}]`` into one ``WeightedReward`` with
``score(images [B, 3, H, W] 0..1, prompts) -> [B]`` and ``features(images) -> [B, D]``: the first term's
``image_features`` when it has one, else ``core.features.pixel_features`` (used for sample-grid diversity).
``source`` is a local path (``comfy_aig.core.rewards.load_reward_model``) or ``builtin:<name>`` with
name in ``TOY_REWARDS`` (pixel rewards without weights, for tests, demos and smoke runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core.features import pixel_features


def redness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    """mean over pixels of R - (G + B) / 2. [B, 3, H, W] -> [B]."""
    return (images[:, 0] - 0.5 * (images[:, 1] + images[:, 2])).mean(dim=(1, 2))


def yellowness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    """mean over pixels of min(R, G) - B (the demo's hackable reward). [B, 3, H, W] -> [B]."""
    return (torch.minimum(images[:, 0], images[:, 1]) - images[:, 2]).mean(dim=(1, 2))


def brightness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    """mean pixel value. [B, 3, H, W] -> [B]."""
    return images.mean(dim=(1, 2, 3))


TOY_REWARDS = {"redness": redness, "yellowness": yellowness, "brightness": brightness}


def score_fn(reward) -> Callable:
    """reward.score for a RewardModel-like object, the reward itself for a callable (images, prompts) -> [B]."""
    if hasattr(reward, "score"):
        return reward.score
    if callable(reward):
        return reward
    raise TypeError(f"reward must have .score(images, prompts) or be callable, got {type(reward).__name__}")


class WeightedReward:
    """r(x, c) = sum_i w_i r_i(x, c); features from the first term's image_features, else pixel_features."""

    def __init__(self, terms: Sequence[tuple[float, object]]):
        if not terms:
            raise ValueError("WeightedReward needs at least one (weight, reward) pair")
        self.terms = [(float(w), r) for w, r in terms]
        self.parts = [(w, score_fn(r)) for w, r in self.terms]
        self.features = getattr(self.terms[0][1], "image_features", None) or pixel_features

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Scores [B]; a single term of weight 1 is returned as that reward gives it."""
        if len(self.parts) == 1 and self.parts[0][0] == 1.0:
            return self.parts[0][1](images, prompts)
        return sum(w * fn(images, prompts).float() for w, fn in self.parts)

    __call__ = score


def _load_term(source: str, kind: str | None, device):
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in TOY_REWARDS:
            raise ValueError(f"unknown builtin reward '{name}'; valid: {', '.join(TOY_REWARDS)}")
        return TOY_REWARDS[name]
    from ..core.rewards import load_reward_model

    model = load_reward_model(source, kind=None if kind in (None, "auto") else kind, device=device)
    model.requires_grad_(False)
    return model.eval()


def build_reward(terms: list[dict], device=None) -> WeightedReward:
    """Reward from config terms [{source, weight=1, kind='auto'}]."""
    if not terms:
        raise ValueError("no reward configured: set reward.terms, e.g. --set 'reward.terms=[{source=\"/models/"
                         "PickScore_v1\"}]' or [{source=\"builtin:yellowness\"}] for a toy run")
    return WeightedReward([(float(t.get("weight", 1.0)), _load_term(t["source"], t.get("kind"), device)) for t in terms])

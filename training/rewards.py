"""Reward construction for training: local reward models, toy colour rewards, weighted sums.

``build_reward(terms, device)`` turns ``[{source, weight, kind}]`` into one object with
``score(images [B, 3, H, W] 0..1, prompts) -> [B]`` (a ``draft.WeightedReward`` when several terms) and
``image_features(images) -> [B, D]`` when the first term has it (used for sample-grid diversity).
``source`` is a local path (``comfy_aig.core.rewards.load_reward_model``) or ``builtin:<name>`` with
name in ``TOY_REWARDS`` (pixel rewards without weights, for tests, demos and smoke runs).
"""

from __future__ import annotations

import torch

from .draft import WeightedReward


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


def pixel_features(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Downsampled pixels as features [B, 3 * size * size] (diversity fallback without a feature model)."""
    return torch.nn.functional.interpolate(images.float(), size=(size, size), mode="area").flatten(1)


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


class Reward:
    """Weighted sum of reward terms with an optional feature extractor for diversity monitoring."""

    def __init__(self, terms: list[tuple[float, object]]):
        self.terms = terms
        self._combined = WeightedReward(terms) if len(terms) > 1 or terms[0][0] != 1.0 else None
        first = terms[0][1]
        self.features = getattr(first, "image_features", None) or pixel_features

    def score(self, images: torch.Tensor, prompts) -> torch.Tensor:
        if self._combined is not None:
            return self._combined.score(images, prompts)
        fn = self.terms[0][1]
        return (fn.score if hasattr(fn, "score") else fn)(images, prompts)

    __call__ = score


def build_reward(terms: list[dict], device=None) -> Reward:
    """Reward from config terms [{source, weight=1, kind='auto'}]."""
    if not terms:
        raise ValueError("no reward configured: set reward.terms, e.g. --set 'reward.terms=[{source=\"/models/"
                         "PickScore_v1\"}]' or [{source=\"builtin:yellowness\"}] for a toy run")
    return Reward([(float(t.get("weight", 1.0)), _load_term(t["source"], t.get("kind"), device)) for t in terms])

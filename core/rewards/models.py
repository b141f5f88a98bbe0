"""Reward heads over a CLIP backbone: PickScore, HPSv2/2.1, CLIPScore and the LAION aesthetic MLP.

- PickScore (Kirstain et al. 2023): logit_scale.exp() * cos(image, text).
- HPSv2 / v2.1 (Wu et al. 2023): cos(image, text) (tables print x100); longest-side + pad preprocessing.
- CLIPScore (Hessel et al. 2021, torchmetrics convention): max(100 * cos(image, text), 0).
- LAION aesthetic v2: affine MLP on the L2-normalised image embedding (prompts ignored).
``image_features`` is the L2-normalised projected CLIP image embedding in every case.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .base import DEFAULT_CHUNK_SIZE, RewardModel
from .preprocess import clip_preprocess

RESIZE_MODE = {"pickscore": "shortest", "hpsv2": "longest", "hpsv2.1": "longest", "clipscore": "shortest",
               "aesthetic": "shortest"}
TEXT_CACHE_SIZE = 4096  # prompts whose text embedding is kept (DRaFT reuses a fixed prompt set)


class ClipEmbeddingReward(RewardModel):
    """Shared part: differentiable preprocessing + CLIP image embedding of one chunk."""

    def __init__(self, backbone, kind: str, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(chunk_size)
        self.backbone = backbone
        self.kind = kind
        self.resize_mode = RESIZE_MODE[kind]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[b, 3, H, W] in 0..1 -> normalised pixels [b, 3, S, S] as the original pipeline."""
        return clip_preprocess(images, self.backbone.image_size, self.resize_mode)

    def features_batch(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embedding [b, D]."""
        return F.normalize(self.backbone.encode_image(self.preprocess(images)), dim=-1)


class ClipTextReward(ClipEmbeddingReward):
    """Image-text rewards: PickScore, HPSv2/2.1, CLIPScore (formula chosen by kind)."""

    def __init__(self, backbone, kind: str, chunk_size: int = DEFAULT_CHUNK_SIZE):
        if kind not in ("pickscore", "hpsv2", "hpsv2.1", "clipscore"):
            raise ValueError(f"ClipTextReward does not implement kind {kind!r}.")
        super().__init__(backbone, kind, chunk_size)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [b, D] (no gradient; cached per prompt string)."""
        usable = torch.is_inference_mode_enabled()  # inference tensors cannot enter an autograd graph
        todo = [p for p in dict.fromkeys(prompts)
                if p not in self._text_cache or (self._text_cache[p].is_inference() and not usable)]
        if todo:
            emb = F.normalize(self.backbone.encode_text(todo), dim=-1)
            for p, e in zip(todo, emb):
                self._text_cache[p] = e
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return torch.stack([self._text_cache[p] for p in prompts])

    def score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Score of each (image, prompt) pair [b]."""
        image = self.features_batch(images)
        text = self.text_features(prompts).to(image.device)
        cosine = (image * text).sum(-1)
        if self.kind == "pickscore":
            return self.backbone.logit_scale.float().exp() * cosine
        if self.kind == "clipscore":
            return (100.0 * cosine).clamp(min=0.0)
        return cosine  # hpsv2 / hpsv2.1

    def _apply(self, fn, *args, **kwargs):
        self._text_cache.clear()  # device/dtype changes invalidate cached embeddings
        return super()._apply(fn, *args, **kwargs)


class AestheticHead(torch.nn.Module):
    """LAION aesthetic predictor v2 MLP: Linear layers at the indices of ``layers.N`` keys, identity between."""

    def __init__(self, widths: dict[int, tuple[int, int]]):
        super().__init__()
        last = max(widths)
        mods = [torch.nn.Linear(*widths[i]) if i in widths else torch.nn.Identity() for i in range(last + 1)]
        self.layers = torch.nn.Sequential(*mods)

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> AestheticHead:
        """Build from ``layers.N.weight/bias`` keys (e.g. 768-1024-128-64-16-1 at 0/2/4/6/7); checks the chain."""
        pat = re.compile(r"layers\.(\d+)\.(weight|bias)$")
        bad = [k for k in state_dict if not pat.match(k)]
        if bad or not state_dict:
            raise ValueError(f"not an aesthetic MLP head: unexpected keys {bad[:5]}; expected layers.N.weight/bias.")
        widths = {}
        for k, v in state_dict.items():
            i = int(pat.match(k).group(1))
            if k.endswith("weight"):
                widths[i] = (int(v.shape[1]), int(v.shape[0]))
        order = sorted(widths)
        for a, b in zip(order, order[1:]):
            if widths[a][1] != widths[b][0]:
                raise ValueError(f"aesthetic head layers {a} -> {b} do not chain: {widths[a]} then {widths[b]}.")
        if widths[order[-1]][1] != 1:
            raise ValueError(f"aesthetic head must end in one output, got {widths[order[-1]][1]}.")
        head = cls(widths)
        missing, unexpected = head.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(f"aesthetic head keys: missing {missing[:5]}, unexpected {unexpected[:5]}.")
        return head

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AestheticReward(ClipEmbeddingReward):
    """LAION aesthetic score: head(normalised CLIP image embedding); prompts are ignored."""

    needs_prompts = False

    def __init__(self, backbone, head: AestheticHead, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(backbone, "aesthetic", chunk_size)
        self.head = head

    def score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Aesthetic score [b] (about 1..10 for the real LAION head)."""
        emb = self.features_batch(images)
        if emb.shape[-1] != self.head.in_features:
            raise ValueError(
                f"aesthetic head expects {self.head.in_features}-d CLIP embeddings but the backbone gives "
                f"{emb.shape[-1]}-d; the LAION v2 head needs CLIP ViT-L/14 (768-d)."
            )
        head_dtype = self.head.layers[0].weight.dtype
        return self.head(emb.to(head_dtype)).squeeze(-1).float()

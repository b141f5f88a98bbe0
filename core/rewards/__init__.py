"""Differentiable reward models (PickScore, HPSv2/2.1, LAION aesthetic, CLIPScore).

Contract (``base.RewardModel``): ``score(images, prompts) -> Tensor[B]`` for images ``[B, 3, H, W]``
float in 0..1 of any size and ``B`` prompt strings, differentiable w.r.t. the pixels;
``image_features(images) -> Tensor[B, D]``. ``load_reward_model`` reads local files only
(transformers / open_clip are imported inside the builders, never at import time).

- ``image_features`` returns the L2-normalised projected CLIP image embedding (float32).
- Subclass ``RewardModel`` for a custom reward: implement ``score_batch(images, prompts)`` and
  ``features_batch(images)`` on one chunk; validation, chunking and dtype handling come for free.
- ``tokenizer.build_clip_tokenizer()`` gives an offline transformers ``CLIPTokenizer`` built from
  open_clip's bundled BPE vocabulary (also right for the SD1.x / SDXL CLIP text encoders).
- Layouts, auto-detection and errors: ``loading.py``; preprocessing: ``preprocess.py``.
"""

from .base import RewardInputError, RewardModel
from .loading import KINDS


def load_reward_model(path, kind=None, device=None, dtype=None, **options) -> RewardModel:
    """Load a reward model from a local file or directory; ``kind`` in KINDS or None to auto-detect."""
    from .loading import load_reward_model as _load

    return _load(path, kind=kind, device=device, dtype=dtype, **options)


__all__ = ["KINDS", "RewardInputError", "RewardModel", "load_reward_model"]

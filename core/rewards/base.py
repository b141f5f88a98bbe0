"""RewardModel contract shared by every scorer: validation, chunking, dtype/device handling.

A reward maps images ``[B, 3, H, W]`` (float, 0..1, any size) and ``B`` prompts to scores ``[B]``,
differentiably with respect to the pixels (DRaFT backpropagates through it, Clark et al. 2023, sec. 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.utils.checkpoint

from ..errors import AIGInputError

DEFAULT_CHUNK_SIZE = 32  # images per forward pass; bounds activation memory for large batches
Progress = Callable[[int, int], None]  # progress(done, total), called after each chunk (e.g. a UI bar)


class RewardInputError(AIGInputError):
    """Bad images or prompts given to a reward model (the message names the problem and the fix)."""


def validate_images(images: torch.Tensor) -> None:
    """Check images are a non-empty float [B, 3, H, W] tensor without NaN/inf; raise RewardInputError otherwise."""
    if not isinstance(images, torch.Tensor):
        raise RewardInputError(
            f"images must be a torch.Tensor [B, 3, H, W] in 0..1, got {type(images).__name__}; "
            "convert with torch.as_tensor (ComfyUI IMAGE [B, H, W, C] needs .permute(0, 3, 1, 2))."
        )
    if images.dim() != 4:
        raise RewardInputError(
            f"images must have rank 4 [B, 3, H, W], got shape {tuple(images.shape)}; "
            "add a batch dimension with images.unsqueeze(0) for a single image."
        )
    if images.shape[1] != 3:
        hint = (" it looks channels-last (ComfyUI IMAGE): use images.permute(0, 3, 1, 2)."
                if images.shape[-1] == 3 else " convert grey/RGBA images to RGB first.")
        raise RewardInputError(f"images must have 3 channels in dim 1 [B, 3, H, W], got shape {tuple(images.shape)};{hint}")
    if images.shape[0] == 0:
        raise RewardInputError("images is an empty batch (B = 0); pass at least one image.")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise RewardInputError(f"images have zero height or width {tuple(images.shape)}; pass non-empty images.")
    if not torch.is_floating_point(images):
        raise RewardInputError(
            f"images must be floating point in 0..1, got dtype {images.dtype}; "
            "divide uint8 images by 255 (images.float() / 255)."
        )
    if not bool(torch.isfinite(images.detach().sum())):  # cheap check, no batch-sized temporaries
        bad = [i for i in range(images.shape[0]) if not bool(torch.isfinite(images[i].detach()).all())]
    else:
        bad = []
    if bad:
        raise RewardInputError(
            f"images contain NaN or inf pixels (batch indices {bad[:8]}); "
            "fix the upstream decode (e.g. fp16 VAE overflow) or clamp with torch.nan_to_num."
        )


def validate_prompts(prompts: Sequence[str] | None, batch: int, needs_prompts: bool = True) -> list[str]:
    """Check there is one prompt string per image; returns the prompts as a list (empty strings if unused)."""
    if prompts is None:
        if needs_prompts:
            raise RewardInputError(
                f"this reward model needs one prompt per image but prompts is None; pass a list of {batch} strings."
            )
        return [""] * batch
    if isinstance(prompts, str):
        raise RewardInputError(
            "prompts must be a list of strings, got a single str; use [prompt] * batch_size to repeat one prompt."
        )
    prompts = list(prompts)
    if len(prompts) != batch:
        raise RewardInputError(
            f"got {len(prompts)} prompts for a batch of {batch} images; pass exactly one prompt per image "
            "(repeat a single prompt with [prompt] * batch_size)."
        )
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise RewardInputError(f"prompt {i} is {type(p).__name__}, not str; pass plain strings.")
    return prompts


def chunk_slices(batch: int, chunk_size: int) -> list[slice]:
    """Contiguous slices of at most chunk_size covering range(batch)."""
    if chunk_size < 1:
        raise RewardInputError(f"chunk_size must be >= 1, got {chunk_size}.")
    return [slice(i, min(i + chunk_size, batch)) for i in range(0, batch, chunk_size)]


def run_chunked(
    fn: Callable[[slice], torch.Tensor],
    batch: int,
    chunk_size: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Concatenate fn(slice) over chunks along dim 0; progress(done, total) per chunk.

    Without gradients this bounds activation memory to one chunk; with gradients the graph of every
    chunk is kept for backward unless the model's ``gradient_checkpointing`` is on.
    """
    outs = []
    for s in chunk_slices(batch, chunk_size):
        outs.append(fn(s))
        if progress is not None:
            progress(s.stop, batch)
    return torch.cat(outs, dim=0)


def num_chunks(batch: int, chunk_size: int) -> int:
    """Number of chunks run_chunked will make."""
    return math.ceil(batch / chunk_size)


class RewardModel(torch.nn.Module):
    """Base class of every reward: ``score(images, prompts) -> [B]`` and ``image_features(images) -> [B, D]``.

    Subclasses implement ``score_batch(images, prompts)`` and ``features_batch(images)`` on one chunk
    (images already validated, on the model's device and compute dtype). ``score``/``image_features``
    validate, move, chunk and return float32 results, keeping gradients to the input pixels.
    A subclass may instead override ``score``/``image_features`` directly (call ``validate_images``).
    Per-call settings (``chunk_size``, ``progress``) are arguments, never stored: a model may be shared.
    """

    kind: str = "base"
    needs_prompts: bool = True  # False for prompt-free rewards (aesthetic); prompts are then optional

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__()
        self.chunk_size = int(chunk_size)  # default images per forward pass when a call gives none
        # recompute each chunk in backward instead of keeping its activations (DRaFT with large batches)
        self.gradient_checkpointing = False

    # -- to implement ---------------------------------------------------------------------------
    def score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores [b] of one chunk [b, 3, H, W]."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_batch or override score")

    def features_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Image features [b, D] of one chunk [b, 3, H, W]."""
        raise NotImplementedError(f"{type(self).__name__} must implement features_batch or override image_features")

    # -- public API -----------------------------------------------------------------------------
    def score(self, images: torch.Tensor, prompts: Sequence[str] | None, chunk_size: int | None = None,
              progress: Progress | None = None) -> torch.Tensor:
        """Reward per image, float32 [B]; differentiable w.r.t. images [B, 3, H, W] in 0..1.

        chunk_size: images per forward pass (None: the model's default); progress(done, total) per chunk.
        """
        validate_images(images)
        prompts = validate_prompts(prompts, images.shape[0], self.needs_prompts)
        x = self._to_model(images)

        def one_chunk(s: slice) -> torch.Tensor:
            def fn(chunk: torch.Tensor) -> torch.Tensor:
                return self.score_batch(chunk, prompts[s]).reshape(-1)

            if self.gradient_checkpointing and torch.is_grad_enabled() and x.requires_grad:
                return torch.utils.checkpoint.checkpoint(fn, x[s], use_reentrant=False)
            return fn(x[s])

        return run_chunked(one_chunk, x.shape[0], self._chunk(chunk_size), progress).float()

    def image_features(self, images: torch.Tensor, chunk_size: int | None = None,
                       progress: Progress | None = None) -> torch.Tensor:
        """Image features, float32 [B, D] (the embedding the reward reads); differentiable w.r.t. images."""
        validate_images(images)
        x = self._to_model(images)
        out = run_chunked(lambda s: self.features_batch(x[s]), x.shape[0], self._chunk(chunk_size), progress)
        return out.float()

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Alias of score."""
        return self.score(images, prompts)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a parameter-free reward)."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: that of the first floating parameter (float32 for a parameter-free reward)."""
        for p in self.parameters():
            if torch.is_floating_point(p):
                return p.dtype
        return torch.float32

    def _chunk(self, chunk_size: int | None) -> int:
        """The call's chunk size, or the model's default when the call gives none."""
        return self.chunk_size if chunk_size is None else int(chunk_size)

    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        """Images on the model's device; preprocessing runs in float32, the network casts to its dtype."""
        return images.to(device=self.device, dtype=torch.float32)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, chunk_size={self.chunk_size}"

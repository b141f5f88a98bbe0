"""Run monitoring: metrics.jsonl (+ optional tensorboard) and a fixed-seed sample grid with reward and diversity.

The grid samples the same prompts and noise every time, with the tuned model and (once, cached) the base
model; diversity is measured against the base samples: SCD (Jena et al. 2024, Sec. 5, sorted eigvalsh spectra)
and Vendi score, on the reward model's image features when it has them, else on downsampled pixels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..core.files import atomic_write
from .config import DraftSection
from .sampling import DiffusionModel, sample

log = logging.getLogger(__name__)


class MetricsLogger:
    """Appends one JSON object per step to metrics.jsonl; mirrors scalars to tensorboard when enabled."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = False):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ValueError("output.tensorboard = true needs the 'tensorboard' package (pip install "
                                 "tensorboard), or set output.tensorboard = false; metrics.jsonl is always written"
                                 ) from error
            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def log(self, step: int, values: dict) -> None:
        record = {"step": step, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)

    def truncate_after(self, step: int) -> None:
        """Drop records newer than `step` (after resuming from an older checkpoint)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save_grid(images: torch.Tensor, path: Path, nrow: int = 4, upscale: int = 1, pad_value: float = 0.0) -> Path:
    """Save [B, 3, H, W] 0..1 images as one PNG grid (2 px padding, optional nearest upscale), atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().clamp(0, 1)
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=pad_value)  # [3, H', W']
    array = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()  # as save_image
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


class SampleMonitor:
    """Fixed-seed sample grid of the tuned model with reward, SCD and Vendi against the base samples."""

    def __init__(self, model: DiffusionModel, reward, prompts: list[str], output_dir: str | Path, seed: int,
                 draft: DraftSection):
        self.model, self.reward, self.prompts = model, reward, list(prompts)
        self.dir = Path(output_dir) / "samples"
        self.kw = dict(steps=draft.steps, guidance_scale=draft.guidance_scale, negative_prompt=draft.negative_prompt)
        generator = torch.Generator().manual_seed(seed)
        self.noise = torch.randn((len(self.prompts), *model.latent_shape), generator=generator)
        self._base = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.reward.features(images).float().cpu()

    def _run(self, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = sample(self.model, self.prompts, mode=mode, noise=self.noise, **self.kw).images
        with torch.no_grad():
            rewards = self.reward.score(images, self.prompts).float().cpu()
        return images, rewards, self._features(images)

    def __call__(self, step: int) -> dict:
        from ..core.diversity import spectral_covariance_distance, vendi_score

        if self._base is None:
            self._base = self._run("base")
            save_grid(self._base[0], self.dir / "base.png")
        images, rewards, feats = self._run("tuned")
        save_grid(images, self.dir / f"step-{step:08d}.png")
        base_feats = self._base[2]
        out = {"sample/reward_mean": float(rewards.mean()), "sample/base_reward_mean": float(self._base[1].mean())}
        if len(self.prompts) >= 2:
            out["sample/scd_vs_base"] = float(spectral_covariance_distance(base_feats.numpy(), feats.numpy()))
            out["sample/vendi"] = float(vendi_score(feats.numpy()))
            out["sample/base_vendi"] = float(vendi_score(base_feats.numpy()))
        return out

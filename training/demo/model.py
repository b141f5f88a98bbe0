"""The demo's base model: a ~1M-parameter diffusers UNet2DConditionModel in pixel space, v-prediction.

"Latents" are the pixels in [-1, 1] rearranged space-to-depth by a factor 2 (pixel_unshuffle:
[B, 3, 32, 32] -> [B, 12, 16, 16]), an exact invertible permutation that halves the UNet's cost on CPU
(i.i.d. Gaussian noise stays i.i.d. Gaussian under a permutation).

Text conditioning is a toy encoder: a learned word-embedding table over the world's small
vocabulary (<bos> + up to three words, padded), giving encoder_hidden_states [B, 4, D].
Weights (UNet + text table) are one safetensors file with keys `unet.*` and `text.*`, and
the architecture is a JSON config beside it (DEFAULT_CONFIG), so the file loads offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ...core.files import atomic_write, atomic_write_text
from .world import COLOUR_NAMES, IMAGE_SIZE, SHAPES

WEIGHTS_NAME = "base_model.safetensors"
CONFIG_NAME = "base_model.json"
PACKAGE_DIR = Path(__file__).resolve().parent

VOCABULARY = ("<pad>", "<bos>", "a", "an", "shape", *COLOUR_NAMES, *SHAPES)
MAX_WORDS = 3

DEFAULT_CONFIG = {
    "unet": {
        "sample_size": IMAGE_SIZE // 2,
        "in_channels": 12,
        "out_channels": 12,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": 32,
        "attention_head_dim": 1,  # diffusers' legacy name: number of heads
        "norm_num_groups": 8,
    },
    "scheduler": {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        "clip_sample": False,
    },
    "text": {"embedding_dim": 32},
    "space_to_depth": 2,
}


class ToyTextEncoder(nn.Module):
    """Prompt -> encoder_hidden_states [B, 1 + MAX_WORDS, D] by a learned word-embedding table."""

    def __init__(self, embedding_dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(len(VOCABULARY), embedding_dim)
        self.position = nn.Parameter(torch.zeros(1 + MAX_WORDS, embedding_dim))
        nn.init.normal_(self.embedding.weight, std=1.0)

    @staticmethod
    def tokenize(prompts: list[str]) -> torch.Tensor:
        """Word ids [B, 1 + MAX_WORDS]: <bos>, the words, then <pad>. Unknown words raise ValueError."""
        index = {word: i for i, word in enumerate(VOCABULARY)}
        rows = []
        for prompt in prompts:
            words = prompt.lower().replace(",", " ").split()
            unknown = [w for w in words if w not in index or w.startswith("<")]
            if unknown:
                raise ValueError(
                    f"demo prompt '{prompt}' has unknown words {unknown}; the toy vocabulary is: "
                    + ", ".join(VOCABULARY[2:])
                )
            if len(words) > MAX_WORDS:
                raise ValueError(f"demo prompt '{prompt}' has more than {MAX_WORDS} words")
            ids = [index["<bos>"]] + [index[w] for w in words]
            rows.append(ids + [index["<pad>"]] * (1 + MAX_WORDS - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def forward(self, prompts: list[str]) -> torch.Tensor:
        """encoder_hidden_states [B, 1 + MAX_WORDS, D] for a list of prompts."""
        ids = self.tokenize(prompts).to(self.embedding.weight.device)
        return self.embedding(ids) + self.position[None]


def build_unet(config: dict):
    """A fresh UNet2DConditionModel from the `unet` part of a demo config."""
    from diffusers import UNet2DConditionModel

    kwargs = dict(config["unet"])
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        kwargs[key] = tuple(kwargs[key])
    return UNet2DConditionModel(**kwargs)


def build_scheduler(config: dict, kind: str = "ddim"):
    """DDIM (sampling) or DDPM (training noise) scheduler from the `scheduler` part of a config."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}.get(kind)
    if cls is None:
        raise ValueError(f"unknown scheduler kind '{kind}'; valid: ddim, ddpm")
    return cls(**config["scheduler"])


class DemoBaseModel(nn.Module):
    """UNet + toy text encoder, saved together as one safetensors file."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = json.loads(json.dumps(config or DEFAULT_CONFIG))
        self.unet = build_unet(self.config)
        self.text = ToyTextEncoder(self.config["text"]["embedding_dim"])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent: (3 f^2, 32 / f, 32 / f) for space-to-depth factor f."""
        f = self.config["space_to_depth"]
        return (3 * f * f, IMAGE_SIZE // f, IMAGE_SIZE // f)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 32, 32] in 0..1 -> latents [B, 3 f^2, 32/f, 32/f] in [-1, 1]."""
        return torch.nn.functional.pixel_unshuffle(images * 2 - 1, self.config["space_to_depth"])

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images [B, 3, 32, 32] in 0..1 (clamped; differentiable inside the range)."""
        x = torch.nn.functional.pixel_shuffle(latents, self.config["space_to_depth"])
        return ((x + 1) / 2).clamp(0, 1)

    def save(self, weights_path: str | Path, metadata: dict | None = None, half: bool = False) -> None:
        """Atomically write weights (safetensors) and the JSON config beside them."""
        from safetensors.torch import save_file

        weights_path = Path(weights_path)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if half:
            state = {k: v.half() for k, v in state.items()}
        meta = {"config": json.dumps(self.config)} | {k: str(v) for k, v in (metadata or {}).items()}
        readable = 0o644  # package data must be readable by everyone
        atomic_write(weights_path, lambda tmp: save_file(state, str(tmp), metadata=meta), mode=readable)
        config_path = weights_path.with_suffix(".json")
        text = json.dumps(self.config | {"training": metadata or {}}, indent=2)
        atomic_write_text(config_path, text, mode=readable)

    @classmethod
    def load(cls, weights_path: str | Path | None = None) -> DemoBaseModel:
        """Load the shipped base model (default) or a file written by `save`, in float32 eval mode."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        weights_path = Path(weights_path) if weights_path else PACKAGE_DIR / WEIGHTS_NAME
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"demo base model '{weights_path}' not found; train it with "
                "`python -m comfy_aig.training.demo.train_base --out <file>`"
            )
        with safe_open(str(weights_path), framework="pt") as handle:
            config = json.loads(handle.metadata()["config"])
        model = cls(config)
        state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
        model.load_state_dict(state)
        return model.eval()


"""Tiny diffusers models for training tests: a pixel-space toy DiffusionModel, tiny SD1.x / SDXL pipeline dirs."""

from __future__ import annotations

import zlib

import torch

TINY_PIXEL_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4,
)


class ToyTextEncoder(torch.nn.Module):
    """Deterministic word-hash embeddings: prompt -> [4, D] (one row per word, zero padded)."""

    def __init__(self, dim: int = 8, length: int = 4, buckets: int = 64, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(buckets, dim, generator=generator), requires_grad=False)
        self.length, self.buckets = length, buckets

    def forward(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), self.length, self.table.shape[1])
        for b, prompt in enumerate(prompts):
            for i, word in enumerate(prompt.split()[: self.length]):
                out[b, i] = self.table[zlib.crc32(word.encode()) % self.buckets]
        return out


def make_scheduler(prediction_type: str = "epsilon", num_train_timesteps: int = 1000):
    """DDIM with SD's scaled-linear betas and leading spacing (steps_offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )


def tiny_pixel_model(prediction_type: str = "epsilon", seed: int = 0, lora_rank: int = 4, lora_init: str = "zero"):
    """A pixel-space DiffusionModel (8x8 RGB) with a peft LoRA adapter on the attention projections.

    lora_init="zero": standard init (B = 0, the tuned model equals the base); "random": B random too.
    """
    from comfy_aig.training.sampling import Conditioning, DiffusionModel
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_PIXEL_UNET)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=True))
    if lora_init == "random":
        generator = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    encoder = ToyTextEncoder(dim=TINY_PIXEL_UNET["cross_attention_dim"])
    return DiffusionModel(
        unet=unet, scheduler=make_scheduler(prediction_type),
        encode_prompts=lambda prompts: Conditioning(encoder(prompts)),
        decode=lambda x: ((x + 1) / 2).clamp(0, 1), latent_shape=(3, 8, 8),
    )


def lora_parameters(unet) -> list[torch.nn.Parameter]:
    """The trainable LoRA parameters of a UNet with a peft adapter."""
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def redness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    """Toy colour reward: mean(R - (G + B) / 2) per image. [B, 3, H, W] -> [B]."""
    return (images[:, 0] - 0.5 * (images[:, 1] + images[:, 2])).mean(dim=(1, 2))

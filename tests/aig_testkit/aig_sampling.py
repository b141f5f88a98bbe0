"""Helpers for AIG guider tests against an in-process ComfyUI (call only after `comfy_inprocess`)."""

from __future__ import annotations

from pathlib import Path

import torch

LORA_STRENGTH = 0.8  # strength of the fixture LoRA in the guider tests' world
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "ddim", "uni_pc")


def load_unet(path: Path):
    """ModelPatcher of a checkpoint's diffusion model only (no CLIP/VAE: conds are random tensors)."""
    import comfy.sd

    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)
    return model


def with_lora(model, lora_path: Path, strength: float):
    """What ComfyUI's LoraLoaderModelOnly returns: a clone of `model` carrying the LoRA patches."""
    import comfy.sd
    import comfy.utils

    lora = comfy.utils.load_torch_file(str(lora_path), safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
    return patched


def build_world(checkpoint: Path, lora: Path, strength: float) -> dict:
    """Base patcher, its LoraLoader clone, a second checkpoint copy + LoRA (another module), random conds."""
    base = load_unet(checkpoint)
    positive, negative = random_conds()
    return {
        "base": base,
        "lora_model": with_lora(base, lora, strength),
        "other_lora_model": with_lora(load_unet(checkpoint), lora, strength),
        "lora_path": str(lora),
        "positive": positive,
        "negative": negative,
    }


def random_conds(seed: int = 0):
    """(positive, negative) CONDITIONING lists with CLIP-L-shaped random embeddings [1, 77, 768]."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 768, generator=gen), {}]], [[torch.randn(1, 77, 768, generator=gen), {}]]


def make_noise(batch: int, size: int = 4, seed: int = 0) -> torch.Tensor:
    """Latent noise [B, 4, size, size]."""
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed))


def sigmas_for(model, steps: int, scheduler: str = "normal", sampler: str = "euler") -> torch.Tensor:
    """Sigmas exactly as KSampler would use them."""
    import comfy.samplers

    return comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler, scheduler=scheduler).sigmas


def run_guider(guider, noise, sigmas, sampler: str = "euler", seed: int = 0) -> torch.Tensor:
    """guider.sample from an empty latent (text-to-image) with a named ComfyUI sampler."""
    import comfy.samplers

    latent = torch.zeros_like(noise)
    return guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas, disable_pbar=True, seed=seed)


def plain_cfg(model, positive, negative, cfg, noise, sigmas, sampler: str = "euler", seed: int = 0):
    """ComfyUI's own CFGGuider on `model` (the reference every AIG endpoint must match)."""
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return run_guider(guider, noise, sigmas, sampler, seed)


def denoise_once(model, positive, negative, cfg, x, sigma) -> torch.Tensor:
    """CFG denoised x0 of `model` at (x, sigma), through a plain CFGGuider and a one-call custom sampler."""
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider_denoise_once(guider, x, sigma)


def guider_denoise_once(guider, x, sigma) -> torch.Tensor:
    """The denoised x0 one model call of `guider` returns at (x, sigma) (a one-call custom sampler)."""
    import comfy.samplers

    captured = {}

    def capture(model_k, _scaled_noise, sigmas, extra_args=None, callback=None, disable=None):
        s_in = x.new_ones([x.shape[0]])
        captured["x0"] = model_k(x, sigmas[0] * s_in, **(extra_args or {}))
        return x

    sigmas = torch.tensor([float(sigma), 0.0])
    zeros = torch.zeros_like(x)
    guider.sample(zeros, zeros, comfy.samplers.KSAMPLER(capture), sigmas, disable_pbar=True, seed=0)
    return captured["x0"]

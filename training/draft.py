"""DRaFT-K, DRaFT-LV and the KL-regularised loss ("DRaFT+") as one function over `sampling.DiffusionModel`.

Clark et al. 2023 (DRaFT, Sec. 4.1-4.2) and Jena et al. 2024 (Sec. 3, KL baseline):

    loss = -mean_b r(x0_b, prompt_b) + lambda * mean_{k in grad steps} mean((eps_tuned_k - sg(eps_base_k))^2)

Both eps predictions use CFG; for v-prediction models the outputs are converted to eps first.

Public API:

``DraftSettings(steps=50, guidance_scale=7.5, k=1, random_k=False, lv=0, kl_weight=0.0,
track_kl=True, checkpoint=True, negative_prompt="")``: the ``[draft]`` section of the training config
(``config.DraftSection``, which validates it), so ``draft_step(..., config.draft)`` needs no copy.
    * DRaFT-K: no-grad DDIM for steps - K steps, gradients through the last K (``k``); with
      ``random_k`` K is drawn uniformly from 1..k each call (AlignProp style).
    * DRaFT-LV: ``lv = n > 0`` samples x0 without gradient, re-noises it n times to the last timestep and
      backpropagates one denoising step each (K = 1 implied; ``k``/``random_k`` are ignored).
    * ``checkpoint``: gradient-carrying UNet calls run under ``torch.utils.checkpoint.checkpoint(...,
      use_reentrant=False)`` (reentrant checkpointing silently gives the LoRA no gradient).
    * ``track_kl``: compute the KL metric even when ``kl_weight == 0`` (one extra no-grad base call per
      gradient step).

``draft_step(model, prompts, reward, settings, noise=None, generator=None) -> DraftOutput``
    ``reward``: a ``comfy_aig.core.rewards.base.RewardModel`` (``score(images, prompts) -> [B]``), any
    callable ``(images [B, 3, H, W] 0..1, prompts) -> [B]``, or a ``rewards.WeightedReward``.
    ``DraftOutput.loss`` (scalar, call ``.backward()``), ``.metrics`` (floats: loss, reward_mean, reward_std,
    kl, grad_steps, nfe_per_image) and ``.images`` (detached [B, 3, H, W]).

``rewards.WeightedReward([(weight, reward), ...])``: sum_i w_i r_i(images, prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .config import DraftSection
from .rewards import score_fn as _score_fn
from .sampling import (
    Conditioning,
    DiffusionModel,
    _alpha_bar,
    adapter_enabled,
    ddim_step,
    ddim_timesteps,
    guided_output,
    initial_noise,
    prepare_conditioning,
    to_epsilon,
)

DraftSettings = DraftSection  # the algorithm settings are the [draft] config section (validated there)


@dataclass
class DraftOutput:
    """Loss to backpropagate, float metrics and the detached final images."""

    loss: torch.Tensor
    metrics: dict
    images: torch.Tensor


def _tuned_output(model: DiffusionModel, x, t, cond, uncond, scale, use_checkpoint: bool) -> torch.Tensor:
    """CFG output of the tuned model with gradient, through `unet_forward` (the DDP wrapper when training)."""
    forward = model.unet_forward or model.unet

    def run(x_in):
        return guided_output(forward, x_in, t, cond, uncond, scale)

    if use_checkpoint:
        return checkpoint(run, x, use_reentrant=False)
    return run(x)


@torch.no_grad()
def _base_output(model: DiffusionModel, x, t, cond, uncond, scale) -> torch.Tensor:
    """CFG output of the base model (adapter disabled), without gradient: sg(eps_base)."""
    with adapter_enabled(model.unet, False):
        return guided_output(model.unet, x.detach(), t, cond, uncond, scale)


def _grad_step(model, x, t, t_prev, cond, uncond, s: DraftSettings, kl_terms: list) -> torch.Tensor:
    """One gradient-carrying DDIM step; appends mean((eps_tuned - sg eps_base)^2) when KL is needed."""
    out = _tuned_output(model, x, t, cond, uncond, s.guidance_scale, s.checkpoint)
    if s.kl_weight > 0 or s.track_kl:
        base = _base_output(model, x, t, cond, uncond, s.guidance_scale)
        diff = to_epsilon(model, out.float(), x.float(), t) - to_epsilon(model, base.float(), x.float(), t)
        kl_terms.append(diff.pow(2).mean())
    return ddim_step(model, out, x, t, t_prev)


@torch.no_grad()
def _no_grad_chain(model, x, timesteps, stop, cond, uncond, scale) -> torch.Tensor:
    """DDIM with the tuned model over timesteps[:stop] without gradient; returns x at timesteps[stop]."""
    for i in range(stop):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        out = guided_output(model.unet, x, timesteps[i], cond, uncond, scale)
        x = ddim_step(model, out, x, timesteps[i], t_prev)
    return x


def _choose_k(s: DraftSettings, generator: torch.Generator | None) -> int:
    if not s.random_k:
        return s.k
    return int(torch.randint(1, s.k + 1, (1,), generator=generator).item())


def _lv_chain(model, x, timesteps, cond, uncond, s, generator, kl_terms) -> torch.Tensor:
    """DRaFT-LV: x0 without gradient, n re-noisings to the last timestep, one gradient step each. [n*B, ...]"""
    x0 = _no_grad_chain(model, x, timesteps, len(timesteps), cond, uncond, s.guidance_scale)
    t_last = timesteps[-1]
    a = _alpha_bar(model.scheduler, t_last).to(x0.device, x0.dtype)
    gen_device = generator.device if generator is not None else "cpu"
    eps = torch.randn((s.lv, *x0.shape), generator=generator, device=gen_device).to(x0.device, x0.dtype)
    x_t = (a.sqrt() * x0.unsqueeze(0) + (1 - a).sqrt() * eps).reshape(-1, *x0.shape[1:])  # [n*B, ...]
    cond_n = Conditioning.cat([cond] * s.lv)
    uncond_n = None if uncond is None else Conditioning.cat([uncond] * s.lv)
    return _grad_step(model, x_t, t_last, None, cond_n, uncond_n, s, kl_terms)


def draft_step(model: DiffusionModel, prompts: Sequence[str], reward, settings: DraftSettings,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> DraftOutput:
    """One DRaFT-K / DRaFT-LV loss evaluation with optional KL regulariser (module docstring)."""
    s, prompts = settings, list(prompts)
    score = _score_fn(reward)
    x = initial_noise(model, len(prompts), generator) if noise is None else noise.to(model.device)
    with torch.no_grad():
        cond, uncond = prepare_conditioning(model, prompts, s.guidance_scale, s.negative_prompt)
    timesteps = ddim_timesteps(model.scheduler, s.steps)
    kl_terms: list[torch.Tensor] = []
    per_call = 1 if uncond is None else 2
    if s.lv > 0:
        x = _lv_chain(model, x, timesteps, cond, uncond, s, generator, kl_terms)
        reward_prompts, grad_steps = prompts * s.lv, s.lv
    else:
        k = _choose_k(s, generator)
        x = _no_grad_chain(model, x, timesteps, len(timesteps) - k, cond, uncond, s.guidance_scale)
        for i in range(len(timesteps) - k, len(timesteps)):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
            x = _grad_step(model, x, timesteps[i], t_prev, cond, uncond, s, kl_terms)
        reward_prompts, grad_steps = prompts, k
    images = model.decode(x)
    rewards = score(images, reward_prompts).float()  # [B] or [n*B]
    kl = torch.stack(kl_terms).mean() if kl_terms else torch.zeros((), device=rewards.device)
    loss = -rewards.mean() + (s.kl_weight * kl if s.kl_weight > 0 else 0.0)
    # UNet evaluations per prompt: the chain (+ n LV re-noisings), + base calls for the KL term
    nfe = per_call * (len(timesteps) + (s.lv if s.lv > 0 else 0)) + (per_call * grad_steps if kl_terms else 0)
    metrics = {
        "loss": float(loss.detach()),
        "reward_mean": float(rewards.detach().mean()),
        "reward_std": float(rewards.detach().std()) if rewards.numel() > 1 else 0.0,
        "kl": float(kl.detach()),
        "grad_steps": grad_steps,
        "nfe_per_image": nfe,
    }
    return DraftOutput(loss=loss, metrics=metrics, images=images.detach()[: len(prompts)])

"""Model-agnostic DDIM sampling with CFG and optional AIG mixing (Song et al. 2021; Jena et al. 2024, Sec. 4).

Shared contract (used by the trainer, `comfy-aig sample`, the evaluation sweeps and the demo):

``Conditioning(embeds [B, L, D], pooled [B, P] | None, time_ids [B, 6] | None)``
    Text conditioning of one batch. SD1.x and pixel toys fill ``embeds`` only; SDXL also fills
    ``pooled`` (text_encoder_2 projection) and ``time_ids`` (size conditioning). ``Conditioning.cat``
    concatenates along the batch, ``unet_kwargs()`` gives the diffusers UNet keyword arguments.

``DiffusionModel(unet, scheduler, encode_prompts, decode, latent_shape, unet_forward=None)``
    * ``unet``: a diffusers ``UNet2DConditionModel`` (usually with a peft LoRA adapter injected, e.g. by
      ``unet.add_adapter(LoraConfig(...))``; the base model is the same UNet with the adapter disabled).
    * ``scheduler``: any diffusers scheduler with ``alphas_cumprod``, ``config.num_train_timesteps``,
      ``config.prediction_type`` ("epsilon", "v_prediction" or "sample") and ``set_timesteps``.
    * ``encode_prompts(list[str]) -> Conditioning``.
    * ``decode(latents [B, C, h, w]) -> images [B, 3, H, W]`` in 0..1, differentiable
      (SD: VAE decode of latents / scaling_factor then (x + 1) / 2; pixel toy: (x + 1) / 2 clamped).
    * ``latent_shape``: (C, h, w) of one latent.
    * ``unet_forward``: optional callable with the UNet's signature used for gradient-carrying calls
      (the trainer passes a DDP wrapper here); defaults to ``unet``.

``sample(model, prompts, steps=50, guidance_scale=7.5, mode="tuned", schedule=None, noise=None,
generator=None, lora_scale=None, negative_prompt="", return_latents=False) -> SampleResult``
    DDIM (eta = 0) with classifier-free guidance ``out = u + w (c - u)`` applied per branch.
    ``mode``: "base" (adapter disabled), "tuned" (adapter enabled, optionally at ``lora_scale``),
    "aig": ``out = (1 - g) out_base + g out_tuned`` with ``g = schedule(s)``. Mixing eps, v or x0 at
    the same x_t is the same mixture, so the raw model outputs are mixed whatever ``prediction_type`` is.
    Progress, weights, the branch plan and the mix come from ``core/aig.py`` (as in the ComfyUI guider):
    ``s = 1 - t / (num_train_timesteps - 1)``, 0 at pure noise (t = T - 1), 1 at clean (t = 0); a branch
    whose weight is exactly 0 is not run. ``SampleResult.images`` [B, 3, H, W] 0..1,
    ``.latents`` (if asked) and ``.nfe_per_image``: UNet evaluations per image, a CFG pair counts 2.

Lower-level pieces used by ``draft.py``: ``ddim_timesteps``, ``ddim_step``, ``guided_output``,
``to_epsilon``, ``adapter_enabled`` (context manager toggling every peft LoRA layer),
``scaled_lora`` (context manager multiplying the adapter scale), ``tuned_weighting``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..core.aig import AIGWeighting, BranchPlan, TimestepProgress, mix_predictions
from ..core.schedules import Schedule, make_schedule

MODES = ("base", "tuned", "aig")


@dataclass
class Conditioning:
    """Text conditioning of a batch: cross-attention context plus SDXL's pooled embedding and time ids."""

    embeds: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor | None = None  # [B, P] (SDXL text_embeds)
    time_ids: torch.Tensor | None = None  # [B, 6] (SDXL size conditioning)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def unet_kwargs(self) -> dict:
        """Keyword arguments for a diffusers UNet2DConditionModel call."""
        kwargs = {"encoder_hidden_states": self.embeds}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled, "time_ids": self.time_ids}
        return kwargs

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch dimension."""
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        time_ids = None if parts[0].time_ids is None else torch.cat([p.time_ids for p in parts])
        return Conditioning(torch.cat([p.embeds for p in parts]), pooled, time_ids)

    def repeat(self, n: int) -> Conditioning:
        """Each batch entry repeated n times in a row (repeat_interleave)."""
        rep = lambda x: None if x is None else x.repeat_interleave(n, dim=0)  # noqa: E731
        return Conditioning(rep(self.embeds), rep(self.pooled), rep(self.time_ids))

    def to(self, device=None, dtype=None) -> Conditioning:
        """Move every tensor (time ids keep their dtype)."""
        mv = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
        ids = None if self.time_ids is None else self.time_ids.to(device=device)
        return Conditioning(mv(self.embeds), mv(self.pooled), ids)


@dataclass
class DiffusionModel:
    """A text-to-image diffusion model as the sampler and DRaFT see it (see module docstring)."""

    unet: torch.nn.Module
    scheduler: object
    encode_prompts: Callable[[list[str]], Conditioning]
    decode: Callable[[torch.Tensor], torch.Tensor]
    latent_shape: tuple[int, int, int]
    unet_forward: Callable | None = None

    @property
    def prediction_type(self) -> str:
        kind = self.scheduler.config.prediction_type
        if kind not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type '{kind}'; use epsilon, v_prediction or sample")
        return kind

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


@dataclass
class SampleResult:
    """Output of `sample`: images in 0..1, optional final latents and UNet evaluations per image."""

    images: torch.Tensor  # [B, 3, H, W]
    latents: torch.Tensor | None
    nfe_per_image: int


def ddim_timesteps(scheduler, steps: int) -> list[int]:
    """The scheduler's own timestep list for `steps` steps (honours timestep_spacing / steps_offset)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def _alpha_bar(scheduler, t: int | None) -> torch.Tensor:
    """alpha_bar_t; t = None means the end of the chain (final_alpha_cumprod, 1 with set_alpha_to_one)."""
    if t is None or t < 0:
        final = getattr(scheduler, "final_alpha_cumprod", None)
        return torch.as_tensor(1.0 if final is None else final, dtype=torch.float32)
    return scheduler.alphas_cumprod[t].float()


def to_x0_eps(kind: str, out: torch.Tensor, x: torch.Tensor, a: torch.Tensor):
    """(x0, eps) from a model output of the given prediction type at x_t with alpha_bar a (Salimans & Ho 2022)."""
    sa, sb = a.sqrt(), (1 - a).sqrt()
    if kind == "epsilon":
        return (x - sb * out) / sa, out
    if kind == "v_prediction":
        return sa * x - sb * out, sa * out + sb * x
    if kind == "sample":
        return out, (x - sa * out) / sb
    raise ValueError(f"unsupported prediction_type '{kind}'; use epsilon, v_prediction or sample")


def to_epsilon(model: DiffusionModel, out: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
    """The eps prediction equivalent to model output `out` at (x_t, t)."""
    return to_x0_eps(model.prediction_type, out, x, _alpha_bar(model.scheduler, t).to(x.device, x.dtype))[1]


def ddim_step(model: DiffusionModel, out: torch.Tensor, x: torch.Tensor, t: int, t_prev: int | None):
    """Deterministic DDIM update x_t -> x_{t_prev} = sqrt(a') x0 + sqrt(1 - a') eps (eta = 0)."""
    a = _alpha_bar(model.scheduler, t).to(x.device, x.dtype)
    a_prev = _alpha_bar(model.scheduler, t_prev).to(x.device, x.dtype)
    x0, eps = to_x0_eps(model.prediction_type, out, x, a)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def _adapter_layers(unet: torch.nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def adapter_enabled(unet: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily enable/disable every peft adapter layer (enabled=False gives the base model exactly)."""
    layers = _adapter_layers(unet)
    before = [not m.disable_adapters for m in layers]
    for m in layers:
        m.enable_adapters(enabled)
    try:
        yield
    finally:
        for m, was in zip(layers, before):
            m.enable_adapters(was)


@contextlib.contextmanager
def scaled_lora(unet: torch.nn.Module, scale: float | None) -> Iterator[None]:
    """Temporarily multiply every LoRA layer's scaling by `scale` (W + scale * dW); None leaves it as is."""
    if scale is None:
        yield
        return
    layers = [m for m in _adapter_layers(unet) if hasattr(m, "scaling")]
    saved = [dict(m.scaling) for m in layers]
    for m in layers:
        for name in m.scaling:
            m.scaling[name] = m.scaling[name] * float(scale)
    try:
        yield
    finally:
        for m, old in zip(layers, saved):
            m.scaling.update(old)


def guided_output(forward: Callable, x: torch.Tensor, t: int, cond: Conditioning, uncond: Conditioning | None,
                  guidance_scale: float) -> torch.Tensor:
    """CFG in one batched call: u + w (c - u); without uncond (w = 1) a single conditional call."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    if uncond is None:
        return forward(x, tt, **cond.unet_kwargs()).sample
    both = Conditioning.cat([uncond, cond])
    out = forward(torch.cat([x, x]), torch.cat([tt, tt]), **both.unet_kwargs()).sample
    u, c = out.chunk(2)
    return u + guidance_scale * (c - u)


def prepare_conditioning(model: DiffusionModel, prompts: list[str], guidance_scale: float,
                         negative_prompt: str = "") -> tuple[Conditioning, Conditioning | None]:
    """(cond, uncond) for a batch; uncond is None when guidance_scale == 1 (CFG is then a no-op)."""
    cond = model.encode_prompts(list(prompts))
    uncond = None if guidance_scale == 1.0 else model.encode_prompts([negative_prompt] * len(prompts))
    return cond, uncond


def initial_noise(model: DiffusionModel, batch: int, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """x_T ~ N(0, I) of shape [B, *latent_shape] (init_noise_sigma is 1 for DDIM)."""
    gen_device = generator.device if generator is not None else "cpu"
    noise = torch.randn((batch, *model.latent_shape), generator=generator, device=gen_device)
    return noise.to(device or model.device)


def tuned_weighting(mode: str, schedule: Schedule | None, num_train_timesteps: int) -> AIGWeighting:
    """The tuned-branch weighting of a mode over diffusers timesteps t in [0, T - 1] (core/aig.py):
    base g = 0, tuned g = 1, aig g = schedule(s(t)) with s = 1 - t / (T - 1)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}'; valid modes: {', '.join(MODES)}")
    if mode == "aig" and schedule is None:
        raise ValueError("mode='aig' needs a schedule (comfy_aig.core.schedules.make_schedule(...))")
    fixed = {"base": 0.0, "tuned": 1.0}
    weights = schedule if mode == "aig" else make_schedule("constant", value=fixed[mode])
    return AIGWeighting(weights, TimestepProgress(t_max=num_train_timesteps - 1))


def mixed_output(model: DiffusionModel, x, t, cond, uncond, guidance_scale, plan: BranchPlan) -> tuple[torch.Tensor, int]:
    """AIG mixture (1 - g) out_base + g out_tuned, each with its own CFG, running only the branches the plan
    needs; returns (out, UNet evaluations per image)."""
    outs = {}
    for enabled, needed in ((False, plan.run_base), (True, plan.run_tuned)):
        if needed:
            with adapter_enabled(model.unet, enabled):
                outs[enabled] = guided_output(model.unet, x, t, cond, uncond, guidance_scale)
    per_call = 1 if uncond is None else 2
    return mix_predictions(outs.get(False), outs.get(True), plan), per_call * len(outs)


@torch.no_grad()
def sample(model: DiffusionModel, prompts: Sequence[str], steps: int = 50, guidance_scale: float = 7.5,
           mode: str = "tuned", schedule: Schedule | None = None, noise: torch.Tensor | None = None,
           generator: torch.Generator | None = None, lora_scale: float | None = None,
           negative_prompt: str = "", return_latents: bool = False) -> SampleResult:
    """DDIM + CFG sampling of base, tuned (LoRA optionally scaled) or AIG mixture; see module docstring."""
    weighting = tuned_weighting(mode, schedule, model.scheduler.config.num_train_timesteps)
    prompts = list(prompts)
    x = initial_noise(model, len(prompts), generator) if noise is None else noise.to(model.device)
    if x.shape[0] != len(prompts):
        raise ValueError(f"noise has batch {x.shape[0]} but {len(prompts)} prompts were given")
    cond, uncond = prepare_conditioning(model, prompts, guidance_scale, negative_prompt)
    timesteps = ddim_timesteps(model.scheduler, steps)
    nfe = 0
    with scaled_lora(model.unet, lora_scale):
        for i, t in enumerate(timesteps):
            out, n = mixed_output(model, x, t, cond, uncond, guidance_scale, weighting.plan([t]))
            nfe += n
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
            x = ddim_step(model, out, x, t, t_prev)
        images = model.decode(x)
    return SampleResult(images=images, latents=x if return_latents else None, nfe_per_image=nfe)

"""The demo's experiment: DRaFT hacks the toy reward, then AIG / LoRA scaling / KL trade reward for diversity.

Everything runs through the real code paths: `training.sampling` (DDIM + CFG + AIG),
`training.draft` (DRaFT-K + KL), `core.schedules`, `core.diversity`, the RewardModel contract.
Every evaluated point uses the same prompts and the same initial noise as the base reference set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from ...core.diversity import diversity_metrics
from ...core.schedules import Schedule, make_schedule
from ..draft import DraftSettings, draft_step
from ..sampling import Conditioning, DiffusionModel, sample
from .model import DemoBaseModel
from .reward import YellownessReward, normalise_features

logger = logging.getLogger(__name__)

EVAL_PROMPTS = ("a circle", "a square", "a triangle")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "linear_1", "linear_2"]


@dataclass
class DemoConfig:
    """Sizes and sweeps of one demo run; `full()` and `quick()` are the two presets."""

    seed: int = 0
    steps: int = 20  # DDIM steps for training chains and evaluation
    guidance_scale: float = 3.0
    eval_images: int = 192
    eval_chunk: int = 64
    train_steps: int = 50
    train_batch: int = 16
    lr: float = 1e-3
    rank: int = 8
    draft_k: int = 1
    aig_powers: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])
    lora_scales: list = field(default_factory=lambda: [0.25, 0.5, 0.75])
    kl_weights: list = field(default_factory=lambda: [1.0, 10.0])
    aig_windows: list = field(default_factory=lambda: [[0.5, 0.7], [0.7, 0.9]])
    grid_images: int = 24

    @classmethod
    def full(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed)

    @classmethod
    def quick(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed, steps=10, eval_images=48, train_steps=15, train_batch=8, lr=3e-3,
                   aig_powers=[1.0, 4.0], lora_scales=[0.5], kl_weights=[], aig_windows=[[0.6, 0.8]],
                   grid_images=12)


def diffusion_model(base: DemoBaseModel, rank: int, seed: int) -> DiffusionModel:
    """The base UNet with a fresh peft LoRA adapter (B = 0, so tuned == base) as a sampling.DiffusionModel."""
    from peft import LoraConfig

    from .model import build_scheduler

    torch.manual_seed(seed)
    unet = base.unet
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=True))
    text = base.text.requires_grad_(False)

    def encode(prompts: list[str]) -> Conditioning:
        return Conditioning(embeds=text(prompts))

    return DiffusionModel(unet=unet, scheduler=build_scheduler(base.config, "ddim"), encode_prompts=encode,
                          decode=base.decode_latents, latent_shape=base.latent_shape)


def lora_parameters(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Current LoRA weights (name -> tensor clone), to snapshot and restore adapters between runs."""
    return {n: p.detach().clone() for n, p in unet.named_parameters() if "lora_" in n}


def set_lora_parameters(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot from `lora_parameters` back into the adapter."""
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def train_lora(model: DiffusionModel, reward, cfg: DemoConfig, kl_weight: float, init_state: dict) -> dict:
    """DRaFT-K (+ lambda * KL) training of the adapter from `init_state`; returns the curve and final state."""
    set_lora_parameters(model.unet, init_state)
    params = [p for n, p in model.unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    settings = DraftSettings(steps=cfg.steps, guidance_scale=cfg.guidance_scale, k=cfg.draft_k,
                             kl_weight=kl_weight, track_kl=True, checkpoint=False)
    generator = torch.Generator().manual_seed(cfg.seed + 1000)
    curve, start = [], time.time()
    for step in range(cfg.train_steps):
        picks = torch.randint(len(EVAL_PROMPTS), (cfg.train_batch,), generator=generator).tolist()
        prompts = [EVAL_PROMPTS[i] for i in picks]
        out = draft_step(model, prompts, reward, settings, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        curve.append({"step": step + 1, **{k: round(v, 5) for k, v in out.metrics.items()}})
        if (step + 1) % 5 == 0 or step + 1 == cfg.train_steps:
            logger.info("DRaFT lambda=%g step %d/%d reward %.3f kl %.4f (%.0f s)", kl_weight, step + 1,
                        cfg.train_steps, out.metrics["reward_mean"], out.metrics["kl"], time.time() - start)
    for p in params:
        p.requires_grad_(False)
    return {"curve": curve, "state": lora_parameters(model.unet), "seconds": time.time() - start}


@dataclass
class Point:
    """One evaluated sampler setting: method, its parameter and how to sample it."""

    method: str  # base | tuned | aig | aig-window | lora-scale | kl
    label: str
    mode: str
    parameter: float | None = None
    schedule: Schedule | None = None
    lora_scale: float | None = None
    adapter: str = "draft"  # which trained adapter to load (draft or kl:<lambda>)


def sweep_points(cfg: DemoConfig) -> list[Point]:
    """Base, tuned, AIG power(p), cost-aware AIG windows and LoRA scales; KL points are added per run."""
    points = [Point("base", "base", "base"), Point("tuned", "DRaFT LoRA", "tuned", parameter=1.0)]
    for p in cfg.aig_powers:
        points.append(Point("aig", f"AIG power p={p:g}", "aig", p, make_schedule("power", p=p)))
    for start, end in cfg.aig_windows:
        schedule = make_schedule("linear", start=start, end=end)
        points.append(Point("aig-window", f"AIG linear window [{start:g}, {end:g}]", "aig", end, schedule))
    for scale in cfg.lora_scales:
        points.append(Point("lora-scale", f"LoRA scale {scale:g}", "tuned", scale, lora_scale=scale))
    for lam in cfg.kl_weights:
        points.append(Point("kl", f"KL lambda={lam:g}", "tuned", lam, adapter=f"kl:{lam:g}"))
    return points


def eval_inputs(cfg: DemoConfig, latent_shape: tuple) -> tuple[list[str], torch.Tensor]:
    """The fixed evaluation prompts (cycled) and initial noise [N, *latent_shape] shared by every point."""
    prompts = [EVAL_PROMPTS[i % len(EVAL_PROMPTS)] for i in range(cfg.eval_images)]
    noise = torch.randn((cfg.eval_images, *latent_shape), generator=torch.Generator().manual_seed(cfg.seed + 7))
    return prompts, noise


def sample_point(model: DiffusionModel, point: Point, cfg: DemoConfig, prompts, noise) -> tuple[torch.Tensor, int]:
    """Images [N, 3, 32, 32] of one point, sampled in chunks; returns (images, UNet evaluations per image)."""
    chunks, nfe = [], 0
    for i in range(0, len(prompts), cfg.eval_chunk):
        result = sample(model, prompts[i:i + cfg.eval_chunk], steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                        mode=point.mode, schedule=point.schedule, noise=noise[i:i + cfg.eval_chunk],
                        lora_scale=point.lora_scale)
        chunks.append(result.images)
        nfe = result.nfe_per_image
    return torch.cat(chunks), nfe


def point_metrics(reward: YellownessReward, images: torch.Tensor, ref_features: torch.Tensor,
                  ref_raw: torch.Tensor) -> dict:
    """Reward mean/std and diversity metrics of a point against the base reference features."""
    scores = reward.score(images, None)
    raw = reward.image_features(images)
    _, feats = normalise_features(ref_raw, raw)
    metrics = diversity_metrics(ref_features, feats, k=5)
    return {"reward_mean": float(scores.mean()), "reward_std": float(scores.std()), **metrics}


def describe(point: Point) -> dict:
    """JSON-friendly description of a point."""
    out = {k: v for k, v in asdict(point).items() if k != "schedule"}
    out["schedule"] = point.schedule.describe() if point.schedule is not None else None
    return out

"""The demo's experiment: DRaFT hacks the toy reward, then AIG / LoRA scaling / KL trade reward for diversity.

Everything runs through the real code paths: `training.sampling` (DDIM + CFG + AIG),
`training.draft` (DRaFT-K + KL), `core.schedules`, `core.diversity`, the RewardModel contract.
Every evaluated point uses the same prompts and the same initial noise as the base reference set.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...core.diversity import diversity_metrics
from ...core.schedules import Schedule, make_schedule
from ..sampling import Conditioning, DiffusionModel, sample
from .model import DemoBaseModel
from .reward import normalise_features

logger = logging.getLogger(__name__)

EVAL_PROMPTS = ("a circle", "a square", "a triangle")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "linear_1", "linear_2"]


@dataclass
class DemoConfig:
    """Sizes and sweeps of one demo run; `full()` and `quick()` are the two presets."""

    seed: int = 0
    reward: str = "yellowness"  # reward.REWARDS name
    steps: int = 10  # DDIM steps for training chains and evaluation
    guidance_scale: float = 3.0
    eval_images: int = 96
    eval_chunk: int = 96
    train_steps: int = 25
    train_batch: int = 8
    lr: float = 2e-3
    rank: int = 8
    draft_k: int = 1
    aig_powers: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])
    lora_scales: list = field(default_factory=lambda: [0.25, 0.5, 0.75])
    kl_weights: list = field(default_factory=lambda: [0.001, 0.003, 0.01])
    aig_windows: list = field(default_factory=lambda: [[0.3, 0.5], [0.6, 0.8]])
    grid_images: int = 24

    @classmethod
    def full(cls, seed: int = 0, reward: str = "yellowness") -> DemoConfig:
        return cls(seed=seed, reward=reward)

    @classmethod
    def quick(cls, seed: int = 0, reward: str = "yellowness") -> DemoConfig:
        return cls(seed=seed, reward=reward, eval_images=24, eval_chunk=24, train_steps=10, lr=3e-3,
                   aig_powers=[1.0, 4.0], lora_scales=[0.5], kl_weights=[], aig_windows=[[0.6, 0.8]],
                   grid_images=12)


def diffusion_model(base: DemoBaseModel, lora_file: Path | None = None) -> DiffusionModel:
    """A copy of the base UNet as a sampling.DiffusionModel, with the kohya LoRA file loaded (trainer's loader)."""
    from ..lora_export import load_kohya_into_unet
    from .model import build_scheduler

    unet = copy.deepcopy(base.unet).requires_grad_(False)
    if lora_file is not None:
        load_kohya_into_unet(unet, lora_file)
    text = base.text.requires_grad_(False)

    def encode(prompts: list[str]) -> Conditioning:
        return Conditioning(embeds=text(prompts))

    return DiffusionModel(unet=unet, scheduler=build_scheduler(base.config, "ddim"), encode_prompts=encode,
                          decode=base.decode_latents, latent_shape=base.latent_shape)


def train_config(cfg: DemoConfig, kl_weight: float, out_dir: Path, prompts_file: Path):
    """The trainer's TrainConfig for one DRaFT-K (+ lambda KL) run of the demo."""
    from ..config import config_from_dict

    return config_from_dict({
        "lora": {"rank": cfg.rank, "alpha": float(cfg.rank), "targets": list(LORA_TARGETS)},
        "draft": {"steps": cfg.steps, "guidance_scale": cfg.guidance_scale, "k": cfg.draft_k,
                  "kl_weight": float(kl_weight), "track_kl": True, "checkpoint": False},
        "optim": {"lr": cfg.lr, "max_grad_norm": 1.0},
        "train": {"max_steps": cfg.train_steps, "batch_size": cfg.train_batch, "prompts_file": str(prompts_file),
                  "seed": cfg.seed, "device": "cpu", "mixed_precision": "no"},
        "output": {"dir": str(out_dir), "checkpoint_every": 0, "keep_checkpoints": 1, "sample_every": 0},
    })


def train_lora(base: DemoBaseModel, reward, cfg: DemoConfig, kl_weight: float, out_dir: Path) -> dict:
    """DRaFT-K (+ lambda * KL) LoRA training by the project's trainer; returns curve, time and the kohya file."""
    from ..models import add_lora
    from ..trainer import train

    out_dir.mkdir(parents=True, exist_ok=True)
    prompts_file = out_dir / "prompts.txt"
    prompts_file.write_text("\n".join(EVAL_PROMPTS) + "\n")
    config = train_config(cfg, kl_weight, out_dir, prompts_file)
    model = diffusion_model(base)
    add_lora(model.unet, cfg.rank, float(cfg.rank), tuple(LORA_TARGETS), seed=cfg.seed)
    start = time.time()
    train(config, resume=None, model=model, reward=reward, base_kind="comfy_aig_demo")
    seconds = time.time() - start
    curve = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    last = curve[-1]
    logger.info("DRaFT lambda=%g: reward %.3f -> %.3f, kl %.4f, %d steps in %.0f s", kl_weight,
                curve[0]["reward_mean"], last["reward_mean"], last["kl"], len(curve), seconds)
    keep = ("step", "reward_mean", "reward_std", "kl", "loss")
    return {"curve": [{k: round(float(r[k]), 5) for k in keep if k in r} for r in curve], "seconds": seconds,
            "lora_file": out_dir / "lora_final.safetensors"}


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


# metric spaces: the feature net's penultimate layer (primary, keys without prefix) and 8x8-pooled pixels
SPACES = (("featnet", ""), ("pixels", "pixel_"))
PIXEL_GRID = 8


def feature_extractors(net=None) -> dict:
    """{space: images [N, 3, 32, 32] -> raw features [N, D]} for SPACES (the feature net loaded once)."""
    from ...core.features import pixel_features
    from .reward import FeatureNetFeatures

    featnet = FeatureNetFeatures(net)
    return {"featnet": lambda x: featnet.image_features(x).detach(),
            "pixels": lambda x: pixel_features(x, PIXEL_GRID)}


def reference_features(extractors: dict, images: torch.Tensor) -> dict:
    """Per space: (normalised reference features, raw reference features) of the base samples."""
    out = {}
    for space, extract in extractors.items():
        raw = extract(images)
        out[space] = (normalise_features(raw)[0], raw)
    return out


def point_metrics(reward, images: torch.Tensor, refs: dict, extractors: dict) -> dict:
    """Reward mean/std and diversity metrics in every space (featnet: no prefix, pixels: pixel_*) against the base."""
    with torch.no_grad():
        scores = reward.score(images, None)
    out = {"reward_mean": float(scores.mean()), "reward_std": float(scores.std())}
    for space, prefix in SPACES:
        ref_features, ref_raw = refs[space]
        _, feats = normalise_features(ref_raw, extractors[space](images))
        out.update({prefix + k: v for k, v in diversity_metrics(ref_features, feats, k=5).items()})
    return out


def describe(point: Point) -> dict:
    """JSON-friendly description of a point."""
    out = {k: v for k, v in asdict(point).items() if k != "schedule"}
    out["schedule"] = point.schedule.describe() if point.schedule is not None else None
    return out

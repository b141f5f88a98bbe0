"""DRaFT LoRA training loop (Clark et al. 2023; KL baseline of Jena et al. 2024) on a diffusers SD1.x/SDXL model.

``train(config, resume="auto", model=None, reward=None) -> dict`` runs ``config.train.max_steps`` optimizer
steps and returns the last metrics. Per optimizer step: ``grad_accum`` micro-batches of ``batch_size`` prompts
per rank, each a ``draft.draft_step`` loss (divided by grad_accum) backpropagated into the LoRA; LoRA grads are
averaged over ranks (``distributed.average_gradients``), clipped, and AdamW + warmup/constant|cosine LR step.

Reproducibility: the prompts and the initial noise of (step, micro-batch) come from a generator seeded by
(train.seed, step, micro) for the whole global batch, and each rank takes its slice; the LV / random-K
generator is seeded by (seed, step, micro, rank). Resuming from a checkpoint therefore continues the exact
sequence of an uninterrupted run. Rank 0 writes checkpoints, metrics.jsonl, sample grids and the final LoRA.
``model`` (a ``sampling.DiffusionModel`` whose UNet has a trainable peft adapter) and ``reward`` (a
``rewards.Reward``, a ``RewardModel`` or a callable ``(images, prompts) -> [B]``) may be passed in (tests,
the demo) instead of being loaded from the config.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch

from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict
from .distributed import (
    DistInfo,
    average_gradients,
    average_metrics,
    barrier,
    broadcast_parameters,
    init_distributed,
    shutdown,
)
from .draft import DraftSettings, draft_step
from .lora_export import export_kohya

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    if not path:
        raise ValueError("train.prompts_file is empty; set it to a text file with one prompt per line")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {path} has no prompts (one per line, '#' starts a comment)")
    return prompts


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def autocast_context(config: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA (mixed_precision auto|bf16), or when explicitly asked on CPU; else nothing."""
    mode = config.train.mixed_precision
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_lambda(config: TrainConfig):
    """Multiplier of the peak LR: linear warmup, then constant or cosine decay to 0 at max_steps."""
    warmup, total, kind = config.optim.warmup_steps, config.train.max_steps, config.optim.schedule

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def micro_batch(prompts: list[str], latent_shape, seed: int, step: int, micro: int, batch: int, info: DistInfo):
    """This rank's (prompts, noise [batch, *latent_shape], generator) for optimizer step `step`, micro-batch `micro`."""
    g = torch.Generator().manual_seed(hash_seed(seed, step, micro))
    total = batch * info.world_size
    index = torch.randint(len(prompts), (total,), generator=g)
    noise = torch.randn((total, *latent_shape), generator=g)
    mine = slice(info.rank * batch, (info.rank + 1) * batch)
    rank_gen = torch.Generator().manual_seed(hash_seed(seed, step, micro, 1_000 + info.rank))
    return [prompts[i] for i in index[mine].tolist()], noise[mine], rank_gen


def hash_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers."""
    value = 1469598103934665603
    for p in parts:
        value = ((value ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return value


def draft_settings(config: TrainConfig) -> DraftSettings:
    d = config.draft
    return DraftSettings(steps=d.steps, guidance_scale=d.guidance_scale, k=d.k, random_k=d.random_k, lv=d.lv,
                         kl_weight=d.kl_weight, track_kl=d.track_kl, checkpoint=d.checkpoint,
                         negative_prompt=d.negative_prompt)


def load_model(config: TrainConfig, device: torch.device):
    """(DiffusionModel, base kind) from config.model, with a fresh LoRA adapter (or lora.init_from)."""
    from .lora_export import load_kohya_into_unet
    from .models import add_lora, build_diffusion_model, detect_kind, load_pipeline

    m = config.model
    dtype = _DTYPES.get(m.weight_dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if dtype != torch.float32 and isinstance(autocast_context(config, device), contextlib.nullcontext):
        raise ValueError(f"model.weight_dtype resolves to {dtype} but train.mixed_precision gives no autocast on "
                         f"{device.type}; set train.mixed_precision = 'bf16' or model.weight_dtype = 'fp32'")
    kind = detect_kind(m.path) if m.kind == "auto" else m.kind
    pipe = load_pipeline(m.path, kind=kind, config_dir=m.config_dir or None, dtype=dtype)
    pipe.to(device)
    model = build_diffusion_model(pipe, m.resolution, None if m.prediction_type == "auto" else m.prediction_type)
    if config.lora.init_from:
        load_kohya_into_unet(model.unet, config.lora.init_from)
        for n, p in model.unet.named_parameters():
            if "lora_" in n:
                p.data = p.data.float()
                p.requires_grad_(True)
    else:
        add_lora(model.unet, config.lora.rank, config.lora.alpha, tuple(config.lora.targets))
    return model, kind


def _lora_params(unet) -> list[torch.nn.Parameter]:
    params = [p for n, p in unet.named_parameters() if "lora_" in n and p.requires_grad]
    if not params:
        raise ValueError("the UNet has no trainable LoRA parameters; add an adapter first")
    return params


def _optimizer(config: TrainConfig, params):
    o = config.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))


def _resume_path(resume: str | None, output_dir: str) -> Path | None:
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    return Path(resume)


def accumulate_gradients(model, params, config: TrainConfig, prompts, reward, step: int, info: DistInfo, device,
                         settings: DraftSettings) -> dict:
    """LoRA grads of one optimizer step: grad_accum micro-batches of DRaFT, then averaged over ranks."""
    accum, sums = config.optim.grad_accum, {}
    for p in params:
        p.grad = None
    for micro in range(accum):
        batch_prompts, noise, gen = micro_batch(prompts, model.latent_shape, config.train.seed, step, micro,
                                                config.train.batch_size, info)
        with autocast_context(config, device):
            out = draft_step(model, batch_prompts, reward, settings, noise=noise.to(device), generator=gen)
        (out.loss / accum).backward()
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) / accum
    average_gradients(params, info)
    return average_metrics(sums, info, device)


def optimizer_step(model, params, config: TrainConfig, prompts, reward, step: int, info: DistInfo, device,
                   settings: DraftSettings, optimizer, scheduler) -> dict:
    """accumulate_gradients, clip, AdamW step, LR schedule step; returns rank-averaged metrics."""
    metrics = accumulate_gradients(model, params, config, prompts, reward, step, info, device, settings)
    max_norm = config.optim.max_grad_norm
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    optimizer.step()
    scheduler.step()
    metrics.update(grad_norm=float(norm), lr=float(scheduler.get_last_lr()[0]))
    return metrics


def _final_export(model, kind, config, output_dir: Path) -> Path:
    return export_kohya(model.unet, output_dir / "lora_final.safetensors", base_model=kind,
                        config=config_to_dict(config))


def train(config: TrainConfig, resume: str | None = "auto", model=None, reward=None, base_kind: str = "sd15",
          stop_after: int | None = None) -> dict:
    """Run DRaFT LoRA training as configured (module docstring); returns the last step's metrics.

    stop_after: end this process after that global step as if interrupted (checkpoint at that step, no
    final export); the LR schedule still follows train.max_steps, so a later --resume continues exactly.
    """
    from .monitor import MetricsLogger, SampleMonitor
    from .rewards import Reward, build_reward

    device = resolve_device(config.train.device)
    info = init_distributed(device.type)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        prompts = read_prompts(config.train.prompts_file)
        torch.manual_seed(config.train.seed)  # same LoRA init on every rank
        if model is None:
            model, base_kind = load_model(config, device)
        broadcast_parameters(_lora_params(model.unet), info)
        torch.manual_seed(config.train.seed + info.rank)
        if reward is None:
            reward = build_reward(config.reward.terms, device)
        elif not isinstance(reward, Reward):  # a bare RewardModel or callable (images, prompts) -> [B]
            reward = Reward([(1.0, reward)])
        params = _lora_params(model.unet)
        optimizer, scheduler = _optimizer(config, params)
        out_dir = Path(config.output.dir)
        resolved = config_to_dict(config)
        start = 0
        path = _resume_path(resume, config.output.dir)
        if path is not None:
            start = load_checkpoint(path, model.unet, optimizer, scheduler)
            log.info("resumed from %s at step %d", path, start)
        logger = MetricsLogger(out_dir, config.output.tensorboard) if info.is_main else None
        if logger is not None:
            logger.truncate_after(start)
        monitor = None
        if info.is_main and config.output.sample_every > 0:
            monitor = SampleMonitor(model, reward, prompts[: config.output.sample_prompts], config.output.sample_seed,
                                    out_dir, config.draft.steps, config.draft.guidance_scale,
                                    config.draft.negative_prompt)
        end = config.train.max_steps if stop_after is None else min(stop_after, config.train.max_steps)
        metrics = _loop(model, params, config, prompts, reward, info, device, optimizer, scheduler, start, end,
                        logger, monitor, resolved, base_kind)
        if info.is_main and end == config.train.max_steps:
            _final_export(model, base_kind, config, out_dir)
        if logger is not None:
            logger.close()
        barrier(info)
        return metrics
    finally:
        shutdown(info)


def _loop(model, params, config, prompts, reward, info, device, optimizer, scheduler, start, end, logger, monitor,
          resolved, base_kind) -> dict:
    from tqdm import tqdm

    settings = draft_settings(config)
    out_dir, every = Path(config.output.dir), config.output.checkpoint_every
    bar = tqdm(total=config.train.max_steps, initial=start, disable=not info.is_main, desc="DRaFT", unit="step")
    metrics: dict = {}
    for step in range(start, end):
        tic = time.perf_counter()
        metrics = optimizer_step(model, params, config, prompts, reward, step, info, device, settings,
                                 optimizer, scheduler)
        metrics["s_per_step"] = time.perf_counter() - tic
        done = step + 1
        if monitor is not None and (done % config.output.sample_every == 0 or done == config.train.max_steps):
            metrics.update(monitor(done))
        if info.is_main:
            logger.log(done, metrics)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.4f}", kl=f"{metrics['kl']:.2e}")
            bar.update(1)
            if (every and done % every == 0) or done == end:
                save_checkpoint(out_dir, done, model.unet, optimizer, scheduler, resolved,
                                kohya_writer=lambda p: export_kohya(model.unet, p, base_model=base_kind,
                                                                    config=resolved),
                                keep=config.output.keep_checkpoints)
        barrier(info)
    bar.close()
    return metrics

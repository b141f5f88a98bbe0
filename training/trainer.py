"""DRaFT LoRA training loop (Clark et al. 2023; KL baseline of Jena et al. 2024) on a diffusers SD1.x/SDXL model.

``train(config, resume="auto", model=None, reward=None) -> dict`` runs ``config.train.max_steps`` optimizer
steps and returns the last metrics. Per optimizer step: ``grad_accum`` micro-batches of ``batch_size`` prompts
per rank, each a ``draft.draft_step`` loss (divided by grad_accum) backpropagated into the LoRA; LoRA grads are
averaged over ranks (``distributed.average_gradients``), clipped, and AdamW + warmup/constant|cosine LR step.

The run's state (model, reward, prompts, optimizer, LR schedule, rank, step) is one ``TrainState``; the side
jobs (sample grid, metrics.jsonl, progress bar, checkpoints, final LoRA) are ``callbacks.Callback`` objects
called after each step, registered by ``train`` on rank 0.

Reproducibility: the prompts and the initial noise of (step, micro-batch) come from a generator seeded by
(train.seed, step, micro) for the whole global batch, and each rank takes its slice; the LV / random-K
generator is seeded by (seed, step, micro, rank). Resuming from a checkpoint therefore continues the exact
sequence of an uninterrupted run. Rank 0 writes checkpoints, metrics.jsonl, sample grids and the final LoRA.
``model`` (a ``sampling.DiffusionModel`` whose UNet has a trainable peft adapter) and ``reward`` (a
``rewards.WeightedReward``, a ``RewardModel`` or a callable ``(images, prompts) -> [B]``) may be passed in
(tests, the demo) instead of being loaded from the config.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.files import torch_dtype
from .checkpointing import latest_checkpoint, load_checkpoint
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
from .draft import draft_step
from .inputs import read_prompts, resolve_device
from .lora_params import lora_parameters, make_trainable, trainable_lora_parameters
from .sampling import DiffusionModel

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """One run's state: what every step and callback reads; params, optimizer and LR schedule are built here."""

    config: TrainConfig
    model: DiffusionModel
    reward: object  # .score(images, prompts) -> [B]
    prompts: list[str]
    info: DistInfo = field(default_factory=DistInfo)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    base_kind: str = "sd15"
    step: int = 0  # optimizer steps done
    end: int = 0  # this process stops after this step
    metrics: dict = field(default_factory=dict)  # of the last step

    def __post_init__(self):
        self.params = trainable_lora_parameters(self.model.unet)
        o = self.config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.config))

    @property
    def out_dir(self) -> Path:
        return Path(self.config.output.dir)

    def resolved_config(self) -> dict:
        """The config as plain data (saved in checkpoints and the LoRA metadata)."""
        return config_to_dict(self.config)


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


def hash_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (FNV-1a style)."""
    value = 1469598103934665603
    for p in parts:
        value = ((value ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return value


def micro_batch(state: TrainState, micro: int):
    """This rank's (prompts, noise [batch, *latent_shape], generator) for step state.step, micro-batch `micro`."""
    seed, batch, info = state.config.train.seed, state.config.train.batch_size, state.info
    g = torch.Generator().manual_seed(hash_seed(seed, state.step, micro))
    total = batch * info.world_size
    index = torch.randint(len(state.prompts), (total,), generator=g)
    noise = torch.randn((total, *state.model.latent_shape), generator=g)  # [world * batch, C, h, w]
    mine = slice(info.rank * batch, (info.rank + 1) * batch)
    rank_gen = torch.Generator().manual_seed(hash_seed(seed, state.step, micro, 1_000 + info.rank))
    return [state.prompts[i] for i in index[mine].tolist()], noise[mine], rank_gen


def _weight_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """model.weight_dtype (auto: bf16 on CUDA, else fp32); anything but fp32 needs an autocast."""
    name = config.model.weight_dtype
    if name != "auto":
        dtype = torch_dtype(name)
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype != torch.float32 and isinstance(autocast_context(config, device), contextlib.nullcontext):
        raise ValueError(f"model.weight_dtype resolves to {dtype} but train.mixed_precision gives no autocast on "
                         f"{device.type}; set train.mixed_precision = 'bf16' or model.weight_dtype = 'fp32'")
    return dtype


def load_model(config: TrainConfig, device: torch.device):
    """(DiffusionModel, base kind) from config.model, with a fresh LoRA adapter (or lora.init_from)."""
    from .lora_export import load_kohya_into_unet
    from .models import add_lora, build_diffusion_model, detect_kind, load_pipeline

    m = config.model
    dtype = _weight_dtype(config, device)
    kind = detect_kind(m.path) if m.kind == "auto" else m.kind
    pipe = load_pipeline(m.path, kind=kind, config_dir=m.config_dir or None, dtype=dtype)
    pipe.to(device)
    model = build_diffusion_model(pipe, m.resolution, None if m.prediction_type == "auto" else m.prediction_type)
    if config.lora.init_from:
        load_kohya_into_unet(model.unet, config.lora.init_from)
        make_trainable(lora_parameters(model.unet))
    else:
        add_lora(model.unet, config.lora.rank, config.lora.alpha, tuple(config.lora.targets))
    return model, kind


def accumulate_gradients(state: TrainState) -> dict:
    """LoRA grads of step state.step: grad_accum micro-batches of DRaFT, then averaged over ranks."""
    accum, sums = state.config.optim.grad_accum, {}
    for p in state.params:
        p.grad = None
    for micro in range(accum):
        prompts, noise, gen = micro_batch(state, micro)
        with autocast_context(state.config, state.device):
            out = draft_step(state.model, prompts, state.reward, state.config.draft, noise=noise.to(state.device),
                             generator=gen)
        (out.loss / accum).backward()
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) / accum
    average_gradients(state.params, state.info)
    return average_metrics(sums, state.info, state.device)


def optimizer_step(state: TrainState) -> dict:
    """accumulate_gradients, clip, AdamW step, LR schedule step; returns rank-averaged metrics."""
    metrics = accumulate_gradients(state)
    max_norm = state.config.optim.max_grad_norm
    norm = torch.nn.utils.clip_grad_norm_(state.params, max_norm if max_norm > 0 else float("inf"))
    state.optimizer.step()
    state.scheduler.step()
    metrics.update(grad_norm=float(norm), lr=float(state.scheduler.get_last_lr()[0]))
    return metrics


def _resume_path(resume: str | None, output_dir: str) -> Path | None:
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    return Path(resume)


def _resume(state: TrainState, resume: str | None) -> None:
    """Restore LoRA, optimizer, LR schedule and RNG from the checkpoint `resume` names, if any."""
    path = _resume_path(resume, state.config.output.dir)
    if path is not None:
        state.step = load_checkpoint(path, state.model.unet, state.optimizer, state.scheduler)
        log.info("resumed from %s at step %d", path, state.step)


def _start(config: TrainConfig, info: DistInfo, device: torch.device, model, reward, base_kind: str) -> TrainState:
    """Prompts, model (same LoRA init on every rank), reward, optimizer: the state before step 0."""
    from .rewards import WeightedReward, build_reward

    prompts = read_prompts(config.train.prompts_file)
    torch.manual_seed(config.train.seed)  # same LoRA init on every rank
    if model is None:
        model, base_kind = load_model(config, device)
    broadcast_parameters(trainable_lora_parameters(model.unet), info)
    torch.manual_seed(config.train.seed + info.rank)
    if reward is None:
        reward = build_reward(config.reward.terms, device)
    elif not isinstance(reward, WeightedReward):  # a bare RewardModel or callable (images, prompts) -> [B]
        reward = WeightedReward([(1.0, reward)])
    return TrainState(config, model, reward, prompts, info=info, device=device, base_kind=base_kind)


def run_steps(state: TrainState, callbacks: list) -> dict:
    """Optimizer steps state.step .. state.end - 1, each followed by the callbacks and a barrier."""
    for _ in range(state.step, state.end):
        tic = time.perf_counter()
        state.metrics = optimizer_step(state)
        state.metrics["s_per_step"] = time.perf_counter() - tic
        state.step += 1
        for callback in callbacks:
            callback.on_step_end(state)
        barrier(state.info)
    for callback in callbacks:
        callback.on_train_end(state)
    return state.metrics


def train(config: TrainConfig, resume: str | None = "auto", model=None, reward=None, base_kind: str = "sd15",
          stop_after: int | None = None) -> dict:
    """Run DRaFT LoRA training as configured (module docstring); returns the last step's metrics.

    stop_after: end this process after that global step as if interrupted (checkpoint at that step, no
    final export); the LR schedule still follows train.max_steps, so a later --resume continues exactly.
    """
    from .callbacks import default_callbacks

    device = resolve_device(config.train.device)
    info = init_distributed(device.type)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        state = _start(config, info, device, model, reward, base_kind)
        _resume(state, resume)
        max_steps = config.train.max_steps
        state.end = max_steps if stop_after is None else min(stop_after, max_steps)
        metrics = run_steps(state, default_callbacks(state) if info.is_main else [])
        barrier(info)
        return metrics
    finally:
        shutdown(info)

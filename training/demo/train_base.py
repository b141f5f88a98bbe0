"""Train the demo's base model from scratch on the toy world (v-prediction MSE, Salimans & Ho 2022).

loss = || v_theta(x_t, t, c) - (alpha_t eps - sigma_t x0) ||^2 with prompts dropped to "" for
10% of the batch (so CFG works), AdamW with warmup + cosine decay, EMA of the weights (the
EMA is what is saved). The shipped weights were made with:

    OMP_NUM_THREADS=1 python -m comfy_aig.training.demo.train_base --steps 2400 --batch 32 --out <file>
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the base-model training run."""
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors (config JSON goes beside)")
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps (default 2400)")
    parser.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of saved weights (default 0.999)")
    parser.add_argument("--uncond-prob", type=float, default=0.1, help="prompt dropout for CFG (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, noise and init (default 0)")
    parser.add_argument("--save-every", type=int, default=500, help="write a checkpoint every N steps")
    parser.add_argument("--half", action="store_true", help="store the weights in float16")


def _lr_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warmup then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def v_loss(model, scheduler, images: torch.Tensor, prompts: list[str], generator: torch.Generator):
    """v-prediction MSE for images [B, 3, H, W] in [0, 1] at uniformly drawn timesteps."""
    x0 = model.encode_images(images)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    noisy = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)
    pred = model.unet(noisy, t, encoder_hidden_states=model.text(prompts)).sample
    return torch.nn.functional.mse_loss(pred, target)


def ema_update(ema, model, step: int, max_decay: float) -> None:
    """theta_ema <- d theta_ema + (1 - d) theta, with warm-up d = min(max_decay, (1 + step) / (10 + step))."""
    decay = min(max_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1 - decay)


def train_step(model, scheduler, optimizer, args, step: int, generator: torch.Generator) -> float:
    """One AdamW step on a fresh toy batch with prompt dropout (lr from _lr_factor); returns the loss."""
    from .world import training_batch

    for group in optimizer.param_groups:
        group["lr"] = args.lr * _lr_factor(step, args.steps)
    images, prompts = training_batch(args.batch, generator)
    drop = torch.rand(len(prompts), generator=generator) < args.uncond_prob
    prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
    loss = v_loss(model, scheduler, images, prompts, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def _metadata(args: argparse.Namespace, steps_done: int, running: float, seconds: float) -> dict:
    """What the saved weights record about how they were made."""
    return {
        "command": "python -m comfy_aig.training.demo.train_base "
        f"--steps {args.steps} --batch {args.batch} --lr {args.lr} --ema {args.ema} --seed {args.seed}",
        "steps_done": steps_done,
        "final_loss_ema": round(running, 5),
        "seconds": round(seconds, 1),
    }


def train(args: argparse.Namespace) -> Path:
    """Run the training loop and save the EMA weights to args.out."""
    from .model import DEFAULT_CONFIG, DemoBaseModel, build_scheduler

    torch.manual_seed(args.seed)
    model = DemoBaseModel(DEFAULT_CONFIG).train()
    ema = DemoBaseModel(DEFAULT_CONFIG).eval()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    scheduler = build_scheduler(model.config, "ddpm")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    n_params = sum(p.numel() for p in model.unet.parameters())
    logger.info("base model: %d UNet parameters, %d steps of batch %d", n_params, args.steps, args.batch)
    start, running = time.time(), None
    for step in range(args.steps):
        loss = train_step(model, scheduler, optimizer, args, step, generator)
        ema_update(ema, model, step, args.ema)
        running = loss if running is None else 0.98 * running + 0.02 * loss
        if (step + 1) % 50 == 0:
            logger.info("step %d/%d loss %.4f (%.1f s)", step + 1, args.steps, running, time.time() - start)
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            ema.save(args.out, metadata=_metadata(args, step + 1, running, time.time() - start), half=args.half)
            logger.info("saved %s at step %d", args.out, step + 1)
    return args.out


def main(argv: list[str] | None = None) -> int:
    """`python -m comfy_aig.training.demo.train_base --out FILE`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

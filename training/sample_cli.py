"""`comfy-aig sample`: images from the base model, a LoRA at a scale, or AIG (Jena et al. 2024, Sec. 4).

DDIM + CFG outside ComfyUI (``training.sampling.sample``). Image i of prompt j uses seed ``seed + i`` (its own
noise, so an image is reproducible whatever the batch). Each PNG carries text chunks ``prompt``, ``seed`` and
``comfy-aig`` (JSON: mode, model, LoRA, scale, schedule, steps, CFG, UNet evaluations per image).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..core.schedules import DEFAULT_SCHEDULE, SCHEDULE_NAMES
from .schedule_cli import add_schedule_arguments, schedule_from_args

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, LoRA, mode/schedule, prompts, seeds, sampler settings, output folder."""
    parser.add_argument("--model", required=True, help="single-file checkpoint (.safetensors) or diffusers dir")
    parser.add_argument("--config-dir", default=None, help="diffusers config folder for a single file")
    parser.add_argument("--kind", default="auto", choices=("auto", "sd15", "sdxl"), help="base model kind")
    parser.add_argument("--lora", default=None, help="kohya LoRA (.safetensors), needed for --mode lora/aig")
    parser.add_argument("--mode", default="base", choices=("base", "lora", "aig"),
                        help="base model, LoRA at --lora-scale, or AIG mixture with --schedule")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength in lora mode (1 = full)")
    parser.add_argument("--schedule", default=DEFAULT_SCHEDULE, choices=SCHEDULE_NAMES, help="AIG gamma(s) family")
    add_schedule_arguments(parser)
    parser.add_argument("--prompt", action="append", default=[], help="prompt (repeatable)")
    parser.add_argument("--prompts-file", default=None, help="text file, one prompt per line")
    parser.add_argument("--num", type=int, default=1, help="images per prompt (seeds seed .. seed+num-1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--resolution", type=int, default=None, help="image size (default: model's native)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward batch")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device")
    parser.add_argument("--out", required=True, help="output folder for PNGs")


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        from .inputs import read_prompts

        prompts += read_prompts(args.prompts_file)
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def save_png(image, path: Path, prompt: str, seed: int, settings: dict) -> None:
    """[3, H, W] 0..1 -> PNG with prompt/seed/settings text chunks (temp file + rename)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from ..core.files import atomic_write

    array = (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    info = PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("seed", str(seed))
    info.add_text("comfy-aig", json.dumps(settings, sort_keys=True))
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))


def load_for_sampling(args):
    """DiffusionModel with the LoRA (if any) attached as peft adapter 'default'."""
    from .inputs import resolve_device
    from .lora_export import load_kohya_into_unet
    from .models import build_diffusion_model, load_pipeline

    device = resolve_device(args.device, "--device")
    pipe = load_pipeline(args.model, kind=args.kind, config_dir=args.config_dir)
    pipe.to(device)
    model = build_diffusion_model(pipe, args.resolution)
    if args.mode != "base":
        if not args.lora:
            raise ValueError(f"--mode {args.mode} needs --lora PATH")
        load_kohya_into_unet(model.unet, args.lora)
    return model


def run(args: argparse.Namespace) -> int:
    """Sample every (prompt, seed) pair and write PNGs; logs UNet evaluations per image."""
    import torch

    from .sampling import sample

    if args.num < 1 or args.batch_size < 1:
        raise ValueError("--num and --batch-size must be >= 1")
    prompts = _prompts(args)
    schedule = schedule_from_args(args.schedule, args) if args.mode == "aig" else None
    model = load_for_sampling(args)
    jobs = [(j, p, args.seed + i) for j, p in enumerate(prompts) for i in range(args.num)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"mode": args.mode, "model": str(args.model), "lora": args.lora, "steps": args.steps, "cfg": args.cfg,
                "negative": args.negative, "sampler": "ddim",
                "lora_scale": args.lora_scale if args.mode == "lora" else None,
                "schedule": schedule.describe() if schedule else None}
    for b in range(0, len(jobs), args.batch_size):
        chunk = jobs[b: b + args.batch_size]
        noise = torch.stack([torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(s))
                             for _, _, s in chunk])
        result = sample(model, [p for _, p, _ in chunk], steps=args.steps, guidance_scale=args.cfg,
                        mode={"base": "base", "lora": "tuned", "aig": "aig"}[args.mode], schedule=schedule,
                        noise=noise, lora_scale=args.lora_scale if args.mode == "lora" else None,
                        negative_prompt=args.negative)
        for (j, prompt, seed), image in zip(chunk, result.images):
            save_png(image, out / f"p{j:04d}_s{seed}.png", prompt, seed, {**settings, "nfe": result.nfe_per_image})
    log.info("wrote %d images to %s (%d UNet evaluations per image)", len(jobs), out, result.nfe_per_image)
    return 0

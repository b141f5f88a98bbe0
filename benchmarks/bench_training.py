"""DRaFT memory and speed: peak memory of K = 1 at T = 50 vs T = 10, and step time K = 1 vs full backprop.

Rows: (T=10, K=1), (T=50, K=1), full backprop (K=T) with checkpointing, and full backprop without it.

Each configuration runs in a fresh subprocess on a random-weight latent model (diffusers
UNet2DConditionModel + AutoencoderKL, LoRA rank 8 on attention, CFG on), timing the median of
--repeats draft_step + backward after one warm-up. Memory: on CUDA torch.cuda.max_memory_allocated;
on CPU the bytes of distinct non-parameter storages saved for backward (autograd saved-tensor hooks:
the activations kept until backward) and the process peak-RSS growth during the step (ru_maxrss, coarse).

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py --resolution 32 --batch 1   # CPU, tiny model
    python benchmarks/bench_training.py --size sd15 --resolution 512  # SD1.5-sized UNet (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = {
    "tiny": dict(unet=dict(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=64,
                           attention_head_dim=8, norm_num_groups=16,
                           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
                 vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8), text_dim=64),
    "sd15": dict(unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                           attention_head_dim=8, norm_num_groups=32,
                           down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                           up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
                 vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
                 text_dim=768),
}


def build_model(size: str, resolution: int, device):
    """Random-weight DiffusionModel of the given size with a LoRA (B random so the KL/grad path is live)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from comfy_aig.training.models import add_lora
    from comfy_aig.training.sampling import Conditioning, DiffusionModel

    spec = SIZES[size]
    levels = len(spec["vae"]["block_out_channels"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",)
                        * levels, up_block_types=("UpDecoderBlock2D",) * levels, **spec["vae"]).to(device).eval()
    latent = resolution // 2 ** (levels - 1)
    unet = UNet2DConditionModel(sample_size=latent, in_channels=4, out_channels=4, **spec["unet"]).to(device).eval()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    add_lora(unet, rank=8, alpha=8.0)
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    table = torch.randn(77, spec["text_dim"], device=device)

    def encode(prompts):
        return Conditioning(table.expand(len(prompts), -1, -1) * (1 + 0.1 * torch.tensor(
            [len(p) for p in prompts], device=device, dtype=torch.float32)[:, None, None]))

    def decode(x):
        return ((vae.decode(x / 0.18215).sample + 1) / 2).clamp(0, 1)

    model = DiffusionModel(unet, scheduler, encode, decode, (4, latent, latent))
    model.frozen_modules = [unet, vae]  # for the activation count below
    return model


def run_one(size: str, resolution: int, steps: int, k: int, batch: int, use_checkpoint: bool = True,
            repeats: int = 3) -> dict:
    """Median time of `repeats` draft_step + backward (after one warm-up) and their memory, in this process."""
    import torch

    from comfy_aig.training.draft import DraftSettings, draft_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(size, resolution, device)
    settings = DraftSettings(steps=steps, guidance_scale=7.5, k=k, track_kl=False, checkpoint=use_checkpoint)
    prompts = [f"prompt {i}" for i in range(batch)]

    def reward(images, _prompts):
        return images.mean(dim=(1, 2, 3))

    def step():
        out = draft_step(model, prompts, reward, settings, generator=torch.Generator().manual_seed(0))
        out.loss.backward()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    params = {t.untyped_storage().data_ptr() for m in model.frozen_modules
              for t in (*m.parameters(), *m.buffers())}
    seen, peak = set(), [0]

    def pack(t):  # bytes of distinct non-parameter storages kept for backward (activations)
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            peak[0] += t.untyped_storage().nbytes()
        return t

    rss_before = _current_rss_mib()
    walls, cpus = [], []
    for i in range(repeats):
        tic, cpu = time.perf_counter(), time.process_time()
        if i == 0:  # measure saved-for-backward bytes on the first timed step
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                step()
        else:
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - tic)
        cpus.append(time.process_time() - cpu)
    seconds, cpu_seconds = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
    result = {"size": size, "resolution": resolution, "T": steps, "K": k, "checkpoint": use_checkpoint,
              "batch": batch, "device": device.type,
              "repeats": repeats, "s_per_step": round(seconds, 3), "cpu_s_per_step": round(cpu_seconds, 3),
              "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2),
              "saved_for_backward_mib": round(peak[0] / 2**20, 2),
              "peak_rss_growth_mib": round(max(0.0, _peak_rss_mib() - rss_before), 1)}
    if device.type == "cuda":
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row (median reported)")
    parser.add_argument("--full-steps", type=int, default=10, help="T for the K = T full-backprop comparison")
    parser.add_argument("--one", nargs=3, type=int, metavar=("T", "K", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        steps, k, use_checkpoint = args.one
        row = run_one(args.size, args.resolution, steps, k, args.batch, bool(use_checkpoint), args.repeats)
        print(json.dumps(row))  # noqa: T201
        return 0
    rows = []
    full = args.full_steps
    for steps, k, use_checkpoint in ((10, 1, 1), (50, 1, 1), (full, full, 1), (full, full, 0)):
        cmd = [sys.executable, __file__, "--size", args.size, "--resolution", str(args.resolution), "--batch",
               str(args.batch), "--repeats", str(args.repeats), "--one", str(steps), str(k), str(use_checkpoint)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))  # noqa: T201
    t10, t50, full, naive = rows
    key = "cuda_peak_mib" if "cuda_peak_mib" in t10 else "saved_for_backward_mib"
    summary = {"memory_metric": key, "mem_ratio_K1_T50_vs_T10": round(t50[key] / t10[key], 3),
               "rss_growth_T50_vs_T10_mib": [t50["peak_rss_growth_mib"], t10["peak_rss_growth_mib"]],
               "time_ratio_full_vs_K1_at_T": round(full["s_per_step"] / t10["s_per_step"], 2),
               "cpu_time_ratio_full_vs_K1_at_T": round(full["cpu_s_per_step"] / t10["cpu_s_per_step"], 2),
               "mem_ratio_full_no_checkpoint_vs_K1": round(naive[key] / t10[key], 2),
               "full_backprop_T": full["T"]}
    print(json.dumps(summary))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

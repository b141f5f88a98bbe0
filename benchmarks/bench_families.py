"""AIG against plain CFG at real size: random-weight SD1.5 (860M), SDXL (2.57B) and SD3 medium (2.0B), both LoRA routes.

Usage (from the repo root; CPU at small resolution here, `--device cuda --size 512` / `1024` on a GPU machine):
    COMFYUI_ROOT=/path/to/ComfyUI PYTHONPATH=tests OMP_NUM_THREADS=1 \\
        python benchmarks/bench_families.py --families sd15 sdxl --size 64 --steps 4 --repeats 2
        python benchmarks/bench_families.py --families sd3 --size 64 --steps 4 --repeats 2   # MMDiT, 154 text tokens
    # on a GPU machine (fp16; synchronised wall-time ratios and the CUDA peak allocation):
    COMFYUI_ROOT=... PYTHONPATH=tests python benchmarks/bench_families.py --device cuda --families sd15 sdxl sd3 \
        --size 512 --steps 20 --repeats 3      # and --size 1024 for SDXL / SD3

A random-weight model of the true architecture times like the real checkpoint (the work is the same); Flux
(12B, 48 GB in fp32) does not fit a 24 GB machine.
The LoRA is rank 16 on every attention projection, kohya keys from ComfyUI's own key map. Each family
runs in a fresh process so its peak resident memory is its own: plain CFG with the LoRA merged by
LoraLoader, AIG p = 2 / g = 0 / g = 1 on the unmerged route (`bypass`) and p = 2 on weight hooks.
Ratios use the sampler loop's CPU time of the main thread (medians; wall ratios beside them); on a GPU the
synchronised wall time (CPU ratios beside them) and, for memory, the peak CUDA allocation with the weights.
Targets (issue 14): AIG p=2 <= 2.0x plain (merged LoRA); g=0 and g=1 <= 1.1x; peak memory of unmerged
AIG within 5% of plain (never a second UNet).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_guider import time_run

CFG = 7.0


def family_variants(name: str, tmp: Path, device: str):
    """{variant: make() -> guider} on one real-size model (fp16 on CUDA, fp32 on the CPU), and the LoRA layers."""
    import comfy.samplers
    from safetensors.torch import save_file

    from aig_testkit.aig_sampling import with_lora
    from aig_testkit.families import lora_state_dict, real_size_conds, real_size_model
    from comfy_aig.core.schedules import make_schedule
    from comfy_aig.nodes.guider import build_guider
    from comfy_aig.nodes.tuned_model import resolve_tuned

    base = real_size_model(name, load_device=device, dtype=torch.float16 if device == "cuda" else torch.float32)
    positive, negative = real_size_conds(name)
    lora = lora_state_dict(base, "kohya", rank=16, limit=None, attention_only=True)
    path = tmp / f"{name}_lora.safetensors"
    save_file(lora, str(path))
    merged = with_lora(base, path, 1.0)

    def plain(model):
        def make():
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(positive, negative)
            guider.set_cfg(CFG)
            return guider
        return make

    def aig(schedule, route):
        def make():
            tuned = resolve_tuned(base, lora_path=str(path), lora_strength=1.0, lora_route=route)
            return build_guider(base, positive, negative, CFG, tuned, schedule)
        return make

    p2, g0, g1 = make_schedule("power", p=2.0), make_schedule("constant", value=0.0), make_schedule("constant", value=1.0)
    makers = {"plain_base": plain(base), "plain_lora": plain(merged), "aig_p2_bypass": aig(p2, "bypass"), "aig_g0_bypass": aig(g0, "bypass"),
              "aig_g1_bypass": aig(g1, "bypass"), "aig_p2_hooks": aig(p2, "hooks")}
    return base, makers, len(lora) // 3


def run_family(name: str, size: int, steps: int, repeats: int, device: str) -> dict:
    """Times (median CPU and wall seconds of the sampler loop) and peak memory of every variant: RSS increase
    on the CPU, peak CUDA allocation (weights included) on a GPU."""
    from aig_testkit.aig_sampling import sigmas_for

    with tempfile.TemporaryDirectory() as tmp:
        base, makers, layers = family_variants(name, Path(tmp), device)
        channels = base.model.latent_format.latent_channels
        noise = torch.randn(1, channels, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
        sigmas = sigmas_for(base, steps)
        unet_mb = sum(p.numel() * p.element_size() for p in base.model.diffusion_model.parameters()) / 2**20
        runs = {key: [] for key in makers}
        for key, make in makers.items():  # warm-up (first load, allocator growth); its peak RSS is recorded
            runs[key].append(time_run(make, noise, sigmas))
        for _ in range(repeats):
            for key, make in makers.items():
                runs[key].append(time_run(make, noise, sigmas))
    median = {key: {m: statistics.median(r[m] for r in rs[1:]) for m in ("loop_cpu", "loop")} for key, rs in runs.items()}
    memory = "gpu_peak" if device == "cuda" else "rss"
    rss = {key: max(r[memory] for r in rs) / 2**20 for key, rs in runs.items()}
    return {"family": name, "size": size, "steps": steps, "lora_layers": layers, "unet_mb": unet_mb,
            "median": median, "rss_mb": rss, "device": device}


def row(result: dict) -> str:
    """One markdown row: time ratios over plain CFG with the merged LoRA, peak memory. On the CPU the ratio is
    of the loop's CPU time (wall beside it); on a GPU of its synchronised wall time (CPU time beside it)."""
    median, rss = result["median"], result["rss_mb"]
    main, other = ("loop", "cpu") if result.get("device") == "cuda" else ("loop_cpu", "wall")
    second = "loop_cpu" if main == "loop" else "loop"
    plain, plain_other = median["plain_lora"][main], median["plain_lora"][second]
    cells = [f"{median[key][main] / plain:.2f} ({other} {median[key][second] / plain_other:.2f})"
             for key in ("plain_base", "aig_p2_bypass", "aig_g0_bypass", "aig_g1_bypass", "aig_p2_hooks")]
    memory = f"{rss['aig_p2_bypass']:.0f} / {rss['plain_lora']:.0f} / {rss['aig_p2_hooks']:.0f}"
    return (f"| {result['family']} | {result['unet_mb']:.0f} | {result['size']} | {result['steps']} | {plain:.1f} | "
            + " | ".join(cells) + f" | {memory} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl"], choices=["sd15", "sdxl", "sd3"])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu (fp32, CPU-time ratios) or cuda (fp16, synchronised wall-time ratios, CUDA peak)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one family in this process
    args = parser.parse_args(argv)
    from aig_testkit.comfy import comfyui_root, setup_inprocess

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; run with --device cpu")
    if args.child:
        setup_inprocess(comfyui_root(), cpu=args.device == "cpu")
        print(json.dumps(run_family(args.child, args.size, args.steps, args.repeats, args.device)))
        return 0
    time_kind, memory_kind = ("GPU s", "CUDA peak MB") if args.device == "cuda" else ("CPU s", "peak RSS MB")
    print(f"| family | UNet MB | px | steps | plain LoRA {time_kind} | plain base/plain LoRA | p=2/plain unmerged "
          f"(<=2.0) | g=0/plain (<=1.1) | g=1/plain (<=1.1) | p=2/plain hooks | {memory_kind} unmerged / plain / hooks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.families:
        command = [sys.executable, __file__, "--child", name, "--size", str(args.size), "--steps", str(args.steps),
                   "--repeats", str(args.repeats), "--device", args.device]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(row(json.loads(out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

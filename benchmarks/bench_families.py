"""AIG against plain CFG at real size: random-weight SD1.5 (860M) and SDXL (2.57B) UNets, both LoRA routes.

Usage (from the repo root; CPU at small resolution here, 512/1024 px on a GPU machine):
    COMFYUI_ROOT=/path/to/ComfyUI PYTHONPATH=tests OMP_NUM_THREADS=1 \\
        python benchmarks/bench_families.py --families sd15 sdxl --size 64 --steps 4 --repeats 2

A random-weight UNet of the true architecture times like the real checkpoint (the work is the same).
The LoRA is rank 16 on every attention projection, kohya keys from ComfyUI's own key map. Each family
runs in a fresh process so its peak resident memory is its own: plain CFG with the LoRA merged by
LoraLoader, AIG p = 2 / g = 0 / g = 1 on the unmerged route (`bypass`) and p = 2 on weight hooks.
Ratios use the sampler loop's CPU time of the main thread (medians; wall ratios beside them).
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


def family_variants(name: str, tmp: Path):
    """{variant: make() -> guider} on one real-size model, and the number of LoRA layers."""
    import comfy.samplers
    from safetensors.torch import save_file

    from aig_testkit.aig_sampling import with_lora
    from aig_testkit.families import lora_state_dict, real_size_conds, real_size_model
    from comfy_aig.core.schedules import make_schedule
    from comfy_aig.nodes.guider import build_guider
    from comfy_aig.nodes.tuned_model import resolve_tuned

    base = real_size_model(name)
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


def run_family(name: str, size: int, steps: int, repeats: int) -> dict:
    """Times (median CPU and wall seconds of the sampler loop) and peak RSS increase of every variant."""
    from aig_testkit.aig_sampling import sigmas_for

    with tempfile.TemporaryDirectory() as tmp:
        base, makers, layers = family_variants(name, Path(tmp))
        noise = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
        sigmas = sigmas_for(base, steps)
        unet_mb = sum(p.numel() * p.element_size() for p in base.model.diffusion_model.parameters()) / 2**20
        runs = {key: [] for key in makers}
        for key, make in makers.items():  # warm-up (first load, allocator growth); its peak RSS is recorded
            runs[key].append(time_run(make, noise, sigmas))
        for _ in range(repeats):
            for key, make in makers.items():
                runs[key].append(time_run(make, noise, sigmas))
    median = {key: {m: statistics.median(r[m] for r in rs[1:]) for m in ("loop_cpu", "loop")} for key, rs in runs.items()}
    rss = {key: max(r["rss"] for r in rs) / 2**20 for key, rs in runs.items()}
    return {"family": name, "size": size, "steps": steps, "lora_layers": layers, "unet_mb": unet_mb,
            "median": median, "rss_mb": rss}


def row(result: dict) -> str:
    """One markdown row: CPU-time ratios over plain CFG with the merged LoRA (wall ratios beside), peak RSS."""
    median, rss = result["median"], result["rss_mb"]
    plain, plain_wall = median["plain_lora"]["loop_cpu"], median["plain_lora"]["loop"]
    cells = [f"{median[key]['loop_cpu'] / plain:.2f} (wall {median[key]['loop'] / plain_wall:.2f})"
             for key in ("plain_base", "aig_p2_bypass", "aig_g0_bypass", "aig_g1_bypass", "aig_p2_hooks")]
    memory = f"{rss['aig_p2_bypass']:.0f} / {rss['plain_lora']:.0f} / {rss['aig_p2_hooks']:.0f}"
    return (f"| {result['family']} | {result['unet_mb']:.0f} | {result['size']} | {result['steps']} | {plain:.1f} | "
            + " | ".join(cells) + f" | {memory} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one family in this process
    args = parser.parse_args(argv)
    from aig_testkit.comfy import comfyui_root, setup_inprocess

    if args.child:
        setup_inprocess(comfyui_root())
        print(json.dumps(run_family(args.child, args.size, args.steps, args.repeats)))
        return 0
    print("| family | UNet MB | px | steps | plain LoRA CPU s | plain base/plain LoRA | p=2/plain unmerged (<=2.0) "
          "| g=0/plain (<=1.1) | g=1/plain (<=1.1) | p=2/plain hooks | peak RSS MB unmerged / plain / hooks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.families:
        command = [sys.executable, __file__, "--child", name, "--size", str(args.size), "--steps", str(args.steps),
                   "--repeats", str(args.repeats)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(row(json.loads(out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

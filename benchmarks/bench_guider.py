"""Benchmark of the AIG guider against plain CFG in a real in-process ComfyUI (CPU, shallow SD1.5 fixture).

Usage (from the repo root):
    COMFYUI_ROOT=/work/comfyui PYTHONPATH=tests OMP_NUM_THREADS=1 \
        python benchmarks/bench_guider.py --steps 20 --sizes 64 128 --batches 1 2 --repeats 3

Every variant samples the same noise and conds with Euler / normal; variants are interleaved per repeat
so drifting CPU load hits them alike; medians are reported. "loop" is the sampler's own loop (every
model call and hook weight switch), "total" adds ComfyUI's per-run setup (model load/LoRA merge or
unmerge when the previous run used the other weights, hook registration). Ratios use the main
thread's CPU time of the loop (with OMP_NUM_THREADS=1 torch computes in that thread), which a
machine shared with other jobs distorts far less than wall time; wall ratios are shown beside them
(targets from issue 3):
  AIG p=2 / plain CFG with the merged LoRA   <= 2.05
  AIG g==0 / plain CFG base, AIG g==1 / plain CFG merged LoRA   <= 1.1
  AIG 20% window (linear on progress [0.4, 0.6]) / plain CFG merged LoRA   <= 1.3
Each AIG case runs twice: through weight hooks (lora_route='hooks') and unmerged (lora_route='bypass',
what 'auto' picks for a plain LoRA); "bypass/hooks" is the unmerged route's time over the hook route's.
Peak RSS increase: a fresh process per variant loads the model, then one run (64 px, batch 1) is watched
(resident memory sampled every 2 ms) and its peak minus the resident memory just before it is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch


class PeakRSS:
    """Peak resident set size (bytes) of this process while the context is open, from /proc/self/statm."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def increase(self) -> int:
        return self.peak - self.start


def build_world(fixture_dir: Path):
    """Fixture checkpoint + LoRA, base and LoraLoader patchers, random CLIP-shaped conds."""
    from aig_testkit.aig_sampling import load_unet, random_conds, with_lora
    from aig_testkit.sd_fixtures import build_kohya_lora, build_sd15_checkpoint

    ckpt = build_sd15_checkpoint(fixture_dir / "aig_tiny_sd15.safetensors")
    lora = build_kohya_lora(fixture_dir / "aig_tiny_lora.safetensors")
    base = load_unet(ckpt)
    positive, negative = random_conds()
    return {"base": base, "merged": with_lora(base, lora, 1.0), "lora": str(lora),
            "positive": positive, "negative": negative}


def variants(world, cfg: float):
    """name -> zero-argument factory of a ready guider."""
    import comfy.samplers

    from comfy_aig.core.schedules import make_schedule
    from comfy_aig.nodes.guider import build_guider
    from comfy_aig.nodes.tuned_model import resolve_tuned

    def plain(model):
        def make():
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(world["positive"], world["negative"])
            guider.set_cfg(cfg)
            return guider
        return make

    def aig(schedule, route):
        def make():
            tuned = resolve_tuned(world["base"], lora_path=world["lora"], lora_strength=1.0, lora_route=route)
            return build_guider(world["base"], world["positive"], world["negative"], cfg, tuned, schedule)
        return make

    makers = {"plain_base": plain(world["base"]), "plain_lora": plain(world["merged"])}
    for case, schedule in AIG_CASES.items():
        for route, suffix in ROUTES.items():
            makers[case + suffix] = aig(make_schedule(*schedule[:1], **schedule[1]), route)
    return makers


AIG_CASES = {"aig_p2": ("power", {"p": 2.0}), "aig_g0": ("constant", {"value": 0.0}),
             "aig_g1": ("constant", {"value": 1.0}), "aig_window20": ("linear", {"start": 0.4, "end": 0.6})}
ROUTES = {"hooks": "", "bypass": "_bypass"}  # lora_route -> variant name suffix
PLAIN_FOR = {"aig_p2": "plain_lora", "aig_g0": "plain_base", "aig_g1": "plain_lora", "aig_window20": "plain_lora"}


def memory_variants(world, cfg: float):
    """The variants whose memory is compared in fresh processes."""
    from comfy_aig.core.schedules import make_schedule

    timed = variants(world, cfg)
    return {"plain_lora": timed["plain_lora"], "aig_p2": timed["aig_p2"], "aig_p2_bypass": timed["aig_p2_bypass"],
            "aig_p2_lora_model_input": variants_model_input(world, cfg, make_schedule("power", p=2.0))}


def variants_model_input(world, cfg, schedule):
    """AIG with the tuned model given as a LoraLoader MODEL (weight-hook route from its patches)."""
    from comfy_aig.nodes.guider import build_guider
    from comfy_aig.nodes.tuned_model import resolve_tuned

    def make():
        tuned = resolve_tuned(world["base"], tuned_model=world["merged"], lora_route="hooks")
        return build_guider(world["base"], world["positive"], world["negative"], cfg, tuned, schedule)
    return make


def time_run(make, noise, sigmas):
    """{'total': s, 'loop': s, 'loop_cpu': s, 'rss': bytes, 'gpu_peak': bytes or None, 'calls': branch calls or
    None} of one full sampling run; on a CUDA device the loop is synchronised and the run's peak allocation
    (weights included) measured."""
    import comfy.model_management
    import comfy.samplers

    cuda = comfy.model_management.get_torch_device().type == "cuda"
    guider = make()
    sampler = comfy.samplers.sampler_object("euler")
    inner, box = sampler.sampler_function, {}

    def timed_loop(*args, **kwargs):
        start, cpu = time.perf_counter(), time.thread_time()
        out = inner(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        box["loop"], box["loop_cpu"] = time.perf_counter() - start, time.thread_time() - cpu
        return out

    sampler.sampler_function = timed_loop
    latent = torch.zeros_like(noise)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        start = time.perf_counter()
        guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=0)
        total = time.perf_counter() - start
    gpu_peak = torch.cuda.max_memory_allocated() if cuda else None  # weights included: what a user needs
    return {"total": total, "loop": box["loop"], "loop_cpu": box["loop_cpu"], "rss": rss.increase,
            "gpu_peak": gpu_peak, "calls": getattr(guider, "calls", None)}


def bench_shape(world, size: int, batch: int, steps: int, repeats: int, cfg: float, warmup: bool) -> dict:
    from aig_testkit.aig_sampling import sigmas_for

    noise = torch.randn(batch, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    sigmas = sigmas_for(world["base"], steps)
    makers = variants(world, cfg)
    runs = {name: [] for name in makers}
    if warmup:
        for make in makers.values():  # warm-up: first model load, allocator growth
            time_run(make, noise, sigmas)
    for _ in range(repeats):
        for name, make in makers.items():
            runs[name].append(time_run(make, noise, sigmas))
    median = {key: {name: statistics.median(r[key] for r in rs) for name, rs in runs.items()}
              for key in ("loop_cpu", "loop", "total")}
    ratios, wall_ratios = ratio_table(median["loop_cpu"]), ratio_table(median["loop"])
    calls = {name: rs[-1]["calls"] for name, rs in runs.items()}
    raw = {name: [{k: v for k, v in r.items() if k != "calls"} for r in rs] for name, rs in runs.items()}
    return {"size": size, "batch": batch, "steps": steps, "median": median, "ratios": ratios,
            "wall_ratios": wall_ratios, "calls": calls, "runs": raw}


def ratio_table(seconds: dict) -> dict:
    """'<variant>/<plain>' for every AIG variant, and '<case>_bypass/hooks' per case."""
    out = {}
    for case, plain in PLAIN_FOR.items():
        for suffix in ROUTES.values():
            out[f"{case}{suffix}/{plain}"] = seconds[case + suffix] / seconds[plain]
        out[f"{case}_bypass/hooks"] = seconds[case + "_bypass"] / seconds[case]
    return out


def rss_child(fixture_dir: Path, name: str, cfg: float) -> int:
    """Run in a fresh process: peak RSS increase (bytes) of one 64 px batch-1 run of variant `name`."""
    from aig_testkit.aig_sampling import sigmas_for

    world = build_world(fixture_dir)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return time_run(memory_variants(world, cfg)[name], noise, sigmas_for(world["base"], 4))["rss"]


def measure_rss(fixture_dir: Path, cfg: float) -> dict:
    """variant -> peak RSS increase in MB, each from its own process."""
    out = {}
    for name in ("plain_lora", "aig_p2", "aig_p2_bypass", "aig_p2_lora_model_input"):
        command = [sys.executable, __file__, "--rss-variant", name, "--fixture-dir", str(fixture_dir)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        out[name] = int(done.stdout.strip().splitlines()[-1]) / 2**20
    return out


def lora_target_mb(world) -> tuple[float, float]:
    """(MB of the weights the LoRA targets, MB of the whole UNet) in the loaded dtype."""
    patched = world["merged"].patches.keys()
    state = world["base"].model.state_dict()
    target = sum(state[k].numel() * state[k].element_size() for k in patched)
    unet = sum(v.numel() * v.element_size() for k, v in state.items() if k.startswith("diffusion_model."))
    return target / 2**20, unet / 2**20


def markdown(results: list[dict], rss_mb: dict, target_mb: float, unet_mb: float) -> str:
    lines = [
        "| size | batch | route | plain base | plain LoRA | AIG p=2 | AIG g=0 | AIG g=1 | AIG 20% window "
        "| p=2/plain (<=2.05) | g=0/plain (<=1.1) | g=1/plain (<=1.1) | window/plain (<=1.3) | p=2 bypass/hooks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, q, w = r["median"]["loop_cpu"], r["ratios"], r["wall_ratios"]
        for route, suffix in ROUTES.items():
            cells = [f"{m[case + suffix]:.2f}" for case in AIG_CASES]
            cells += [f"{q[f'{case}{suffix}/{plain}']:.2f} (wall {w[f'{case}{suffix}/{plain}']:.2f})"
                      for case, plain in PLAIN_FOR.items()]
            cells.append(f"{q['aig_p2_bypass/hooks']:.2f} (wall {w['aig_p2_bypass/hooks']:.2f})" if suffix else "")
            lines.append(f"| {r['size']} | {r['batch']} | {route} | {m['plain_base']:.2f} | {m['plain_lora']:.2f} | "
                         + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Times: median CPU seconds of the sampler loop (main thread). Median total wall seconds per run "
                 "including ComfyUI's per-run setup: " + "; ".join(
                     f"{r['size']}px b{r['batch']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["median"]["total"].items())
                     for r in results))
    calls = results[0]["calls"]
    lines.append("Branch evaluations per run (base/tuned): " + ", ".join(
        f"{k} {v['base']}/{v['tuned']}" for k, v in calls.items() if v))
    lines.append("Peak RSS increase of one run in a fresh process (MB): " + ", ".join(
        f"{k} {v:.1f}" for k, v in rss_mb.items()))
    lines.append(f"LoRA-targeted weights: {target_mb:.1f} MB (twice: {2 * target_mb:.1f} MB); UNet: {unet_mb:.1f} MB.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image side in pixels")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--fixture-dir", type=Path, default=None, help="cache for the fixture files")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--rss-variant", default=None, help=argparse.SUPPRESS)  # internal: child process mode
    args = parser.parse_args(argv)

    from aig_testkit.comfy import comfyui_root, setup_inprocess

    root = comfyui_root()
    if root is None:
        parser.error("set COMFYUI_ROOT to a ComfyUI checkout")
    setup_inprocess(root)
    if args.rss_variant:
        print(rss_child(args.fixture_dir, args.rss_variant, args.cfg))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fixture_dir = args.fixture_dir or Path(tmp)
        fixture_dir.mkdir(parents=True, exist_ok=True)
        world = build_world(fixture_dir)
        results = []
        for size in args.sizes:
            for batch in args.batches:
                results.append(bench_shape(world, size, batch, args.steps, args.repeats, args.cfg, not results))
                print(json.dumps({k: results[-1][k] for k in ("size", "batch", "median", "ratios", "wall_ratios")}), flush=True)
        target_mb, unet_mb = lora_target_mb(world)
        rss_mb = measure_rss(fixture_dir, args.cfg)
    print(markdown(results, rss_mb, target_mb, unet_mb))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

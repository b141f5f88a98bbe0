"""`comfy-aig evaluate` throughput: a tiny CPU sweep with 1 process and with 2 gloo processes, side by side.

The tiny SD1.5 of the tests (aig_testkit.eval_fixtures: 16 px images, rank-2 LoRAs) sweeps base, lora:1,
lora:0.5, aig:p=2 and a KL LoRA over --prompts prompts x --images images, --steps DDIM steps, CFG 2, pixel
features and a toy reward. Each row is a fresh evaluation set run through the real command (``python -m
comfy_aig.training evaluate`` or ``torchrun --nproc_per_node=N``); images/s is the command's own figure (all
images of the run / the slowest rank's sampling time, model loading excluded) and wall includes process start,
model loading and the report.

    PYTHONPATH=tests python benchmarks/bench_evaluate.py --prompts 8 --images 2 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts (the test TSV's rows are cycled)")
    parser.add_argument("--images", type=int, default=2, help="images per prompt")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps")
    parser.add_argument("--batch", type=int, default=4, help="sampling.batch_size")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    return parser.parse_args(argv)


def write_config(root: Path, world: dict, args, out: Path) -> Path:
    """The sweep config of one row (its own output folder)."""
    from aig_testkit.eval_fixtures import sweep_data, to_toml

    prompts = root / "prompts.txt"
    words = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")
    shapes = ("circle", "square", "triangle", "star")
    prompts.write_text("".join(f"a {words[i % 8]} {shapes[i // 8 % 4]}\n" for i in range(args.prompts)))
    data = sweep_data(world, out, prompts={"file": str(prompts), "categories": [], "limit": 0,
                                           "images_per_prompt": args.images, "seeds": [0]},
                      sampling={"steps": args.steps, "batch_size": args.batch})
    path = out.with_suffix(".toml")
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def run_row(config: Path, procs: int, threads: int) -> dict:
    """One sweep through the command line; its JSON summary plus the wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                if procs > 1 else [sys.executable])
    cmd = [*launcher, "-m", "comfy_aig.training", "evaluate", "--config", str(config)]
    tic = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {**summary, "wall_s": round(wall, 2)}


def main(argv=None) -> int:
    args = parse_args(argv)
    from aig_testkit.eval_fixtures import build_eval_world

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = build_eval_world(root / "world")
        rows = [(procs, run_row(write_config(root, world, args, root / f"out_{procs}"), procs, args.threads))
                for procs in args.procs]
    images = rows[0][1]["images"]
    print(f"tiny SD1.5 16 px, {len(rows[0][1]['labels'])} methods x {args.prompts} prompts x {args.images} images "
          f"= {images} images, {args.steps} steps, batch {args.batch}, OMP_NUM_THREADS={args.threads}")
    print("| processes | images | images/s (sampling) | per rank images/s | wall s (incl. start, load, report) |")
    print("|---|---|---|---|---|")
    for procs, r in rows:
        print(f"| {procs} | {r['images']} | {r['images_per_s']} | {r['per_rank_images_per_s']} | {r['wall_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reward scoring throughput and chunked peak memory (issue 4 benchmark).

CLIP of ViT-B/32 size with random weights (saved in the PickScore directory layout and loaded through
``load_reward_model``), images 512x512, batch 16:
  ours      : float tensor [B,3,512,512] -> torch preprocessing -> CLIP -> PickScore (text cache cleared per call;
              repeated prompts in a batch are encoded once)
  reference : tensor -> uint8 PIL images -> transformers CLIPImageProcessorPil -> CLIPModel -> PickScore
  ref-fast  : the same with the torchvision-backed CLIPImageProcessor
Peak memory: score a batch of 256 in fresh subprocesses with chunk_size 16 and with no chunking
(chunk_size = 256); reports the growth of peak RSS (CPU) or max_memory_allocated (CUDA) over the
state after loading the model and the input batch.

Run: OMP_NUM_THREADS=2 python benchmarks/bench_rewards.py [--device cpu] [--repeats 3]
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

import numpy as np
import torch


def build_vit_b32_dir(directory: Path) -> Path:
    """Random-weight CLIP ViT-B/32 (openai/clip-vit-base-patch32 geometry) in the PickScore layout."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
                     "max_position_embeddings": 77, "vocab_size": 49408, "eos_token_id": 49407},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
        projection_dim=512,
    )
    CLIPModel(config).save_pretrained(str(directory))
    return directory


def smooth_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Natural-looking random images [B, 3, size, size] in 0..1 (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 16, size // 16, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic").clamp(0, 1)


def pil_pixels(images: torch.Tensor) -> torch.Tensor:
    """Reference preprocessing alone: tensor -> uint8 PIL -> CLIPImageProcessorPil pixel values."""
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    arrays = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return CLIPImageProcessorPil()(images=[Image.fromarray(a) for a in arrays], return_tensors="pt").pixel_values


def reference_scorer(model_dir: Path, fast: bool):
    """PickScore as its README computes it (processor + CLIPModel), starting from a float tensor batch."""
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from comfy_aig.core.rewards.tokenizer import build_clip_tokenizer

    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    processor = CLIPImageProcessor() if fast else CLIPImageProcessorPil()
    tokenizer = build_clip_tokenizer()

    @torch.no_grad()
    def score(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        arrays = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        pil = [Image.fromarray(a) for a in arrays]
        pixels = processor(images=pil, return_tensors="pt").pixel_values
        tok = tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(**tok).pooler_output
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return model.logit_scale.exp() * (img * txt).sum(-1)

    return score


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Median (wall s, process CPU s) per call of each fn, interleaved (A B A B ...) so load hits all alike.

    On a shared machine wall time swings with other jobs; process CPU time (all threads) is the steadier
    measure of the work done.
    """
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(float(v) for v in np.median(np.array(t), axis=0)) for name, t in times.items()}


def throughput(model_dir: Path, device: str, batch: int, size: int, repeats: int) -> dict:
    """Seconds per batch of ours vs the references, for distinct prompts and for one shared prompt."""
    from comfy_aig.core.rewards import load_reward_model

    images = smooth_images(batch, size)
    ours = load_reward_model(model_dir, kind="pickscore", device=device)
    ref_pil, ref_fast = reference_scorer(model_dir, fast=False), reference_scorer(model_dir, fast=True)

    def ours_cold(prompts):
        ours._text_cache.clear()  # no help from earlier calls: text encoded every call
        with torch.no_grad():
            return ours.score(images, prompts).cpu()

    scenarios = {"distinct prompts": [f"a photo number {i} of a cat" for i in range(batch)],
                 "one shared prompt": ["a photo of a cat sitting on a red sofa"] * batch}
    out = {}
    for label, prompts in scenarios.items():
        fns = {"ours": lambda p=prompts: ours_cold(p), "reference (PIL)": lambda p=prompts: ref_pil(images, p)}
        if label == "distinct prompts":
            fns["reference (torchvision)"] = lambda p=prompts: ref_fast(images, p)
        out[label] = time_interleaved(fns, repeats)
    out["preprocessing only"] = time_interleaved(
        {"ours": lambda: ours.preprocess(images), "reference (PIL)": lambda: pil_pixels(images)}, repeats)
    out["max_score_diff_vs_reference"] = (ours_cold(scenarios["distinct prompts"])
                                          - ref_pil(images, scenarios["distinct prompts"])).abs().max().item()
    return out


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def peak_memory_child(model_dir: str, device: str, batch: int, size: int, chunk: int) -> dict:
    """Run in a fresh process: peak memory growth of one chunked score call."""
    from comfy_aig.core.rewards import load_reward_model

    model = load_reward_model(model_dir, kind="pickscore", device=device, chunk_size=chunk)
    images = smooth_images(batch, size).to(device)
    prompts = ["a photo of a cat"] * batch
    with torch.no_grad():
        model.score(images[:1], prompts[:1])  # warm-up, text cached
    if device == "cpu":
        before = _rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux >= 4.0)
        with torch.no_grad():
            model.score(images, prompts)
        growth = (_rss_kib("VmHWM") - before) / 1024
    else:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            model.score(images, prompts)
        growth = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"chunk_size": chunk, "peak_growth_mib": round(growth, 1),
            "input_mib": round(images.numel() * 4 / 2**20, 1)}


def peak_memory(model_dir: Path, device: str, batch: int, size: int, chunk: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_rewards as b; "
            "print(json.dumps(b.peak_memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), "
            "int(sys.argv[6]))))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(model_dir), device, str(batch),
                          str(size), str(chunk)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-batch", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput comparison")
    parser.add_argument("--skip-memory", action="store_true", help="skip the batch-256 peak-memory runs")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_vit_b32_dir(Path(tmp) / "clip-vit-b32-random")
        result = {} if args.memory_only else throughput(model_dir, args.device, args.batch, args.size, args.repeats)
        print(f"load average {os.getloadavg()[0]:.1f}; device={args.device} threads={torch.get_num_threads()} "
              f"batch={args.batch} size={args.size}px "
              f"CLIP ViT-B/32 random weights, PickScore formula, median of {args.repeats} interleaved runs")
        for label in [k for k in ("distinct prompts", "one shared prompt", "preprocessing only") if k in result]:
            sec = result[label]
            print(f"  {label}:")
            for name, (wall, cpu) in sec.items():
                print(f"    {name:24s} wall {wall:7.3f} s ({args.batch / wall:6.2f} img/s, ratio {wall / sec['ours'][0]:.2f}x)"
                      f"  CPU {cpu:7.3f} s (ratio {cpu / sec['ours'][1]:.2f}x)")
        if result:
            print(f"  max |score ours - reference| = {result['max_score_diff_vs_reference']:.4f} (logit scale 100)")
        for chunk in () if args.skip_memory else (args.chunk, args.memory_batch):
            mem = peak_memory(model_dir, args.device, args.memory_batch, args.size, chunk)
            print(f"  batch {args.memory_batch}, chunk_size {chunk:4d}: peak memory growth {mem['peak_growth_mib']:8.1f} MiB "
                  f"(input batch itself {mem['input_mib']} MiB)")


if __name__ == "__main__":
    main()

"""`comfy-aig demo [--out DIR] [--quick]`: reward hacking by DRaFT and the AIG reward-diversity front on CPU.

Steps: load the shipped toy base model, sample the base reference set, train a DRaFT-1 LoRA on
the yellowness reward (and one per KL weight), export each LoRA as a kohya file and load it back,
then sample every point (base, tuned, AIG power p, cost-aware AIG windows, LoRA scales, KL) on the
same prompts and noise, and write report.json, report.md, pareto.png and grids/<method>.png.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DETERMINISM_NOTE = ("Same seed, same machine and thread count: identical numbers (the test checks 1e-6); "
                    "across machines or thread counts float reductions differ, expect about 1e-3 relative.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `comfy-aig demo`."""
    parser.add_argument("--out", type=Path, default=Path("aig_demo"), help="output folder (default ./aig_demo)")
    parser.add_argument("--quick", action="store_true", help="smaller run for CI (under 2 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts, noise and LoRA init (default 0)")
    parser.add_argument("--base-model", type=Path, default=None,
                        help="demo base model .safetensors (default: the one shipped in training/demo)")


def run(args: argparse.Namespace) -> int:
    """Run the demo into args.out; returns 0."""
    from .pipeline import DemoConfig

    cfg = DemoConfig.quick(args.seed) if args.quick else DemoConfig.full(args.seed)
    report = run_demo(cfg, Path(args.out), args.base_model)
    logger.info("demo done in %.0f s: %s", report["seconds_total"], Path(args.out) / "report.md")
    return 0


def run_demo(cfg, out: Path, base_model_path: Path | None = None, figures: bool = True) -> dict:
    """The whole experiment for a DemoConfig; writes the outputs into `out` and returns the report dict."""
    import torch

    from .model import DemoBaseModel
    from .reward import YellownessReward

    start = time.time()
    (out / "grids").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    base = DemoBaseModel.load(base_model_path)
    reward = YellownessReward()
    training, models = train_adapters(base, reward, cfg, out)
    points, grid_rows = evaluate_points(models, reward, cfg, base.latent_shape)
    if figures:
        save_grids(out / "grids", grid_rows, cfg.grid_images)
    report = build_report(cfg, base, base_model_path, training, points)
    report["seconds_total"] = round(time.time() - start, 1)
    write_outputs(out, report, figures)
    return report


def train_adapters(base, reward, cfg, out: Path) -> tuple[dict, dict]:
    """DRaFT LoRA runs (lambda = 0 and each KL weight): (training summaries, DiffusionModel per adapter + base)."""
    from . import pipeline as pl

    training, models = {}, {"base": pl.diffusion_model(base)}
    for lam in [0.0, *cfg.kl_weights]:
        name = "draft" if lam == 0.0 else f"kl:{lam:g}"
        run_dir = out / ("train_draft" if lam == 0.0 else f"train_kl_{lam:g}")
        result = pl.train_lora(base, reward, cfg, lam, run_dir)
        models[name] = pl.diffusion_model(base, result["lora_file"])  # reloaded from the exported kohya file
        training[name] = {"curve": result["curve"], "seconds": round(result["seconds"], 1),
                          "lora_file": str(result["lora_file"].relative_to(out)), "kl_weight": lam}
    return training, models


def evaluate_points(models: dict, reward, cfg, latent_shape) -> tuple[list[dict], dict]:
    """Every sweep point on the shared prompts and noise: (report entries, image rows per method for the grids)."""
    from . import pipeline as pl
    from .reward import normalise_features

    prompts, noise = pl.eval_inputs(cfg, latent_shape)
    points, grid_rows = [], {}
    ref_raw = ref_features = None  # the base point's features: the diversity reference of every point
    for point in pl.sweep_points(cfg):
        t0 = time.time()
        model = models["base" if point.mode == "base" else point.adapter]
        images, nfe = pl.sample_point(model, point, cfg, prompts, noise)
        if point.method == "base":
            ref_raw = reward.image_features(images)
            ref_features = normalise_features(ref_raw)[0]
        metrics = pl.point_metrics(reward, images, ref_features, ref_raw)
        entry = {**pl.describe(point), **{k: round(float(v), 6) for k, v in metrics.items()},
                 "nfe_per_image": nfe, "seconds": round(time.time() - t0, 1)}
        points.append(entry)
        grid_rows.setdefault(point.method, []).append(images[: cfg.grid_images])
        logger.info("%-34s reward %.3f  vendi %.2f  scd %.1f  recall %.3f  nfe %d", point.label,
                    entry["reward_mean"], entry["vendi"], entry["scd"], entry["recall"], nfe)
    return points, grid_rows


def save_grids(folder: Path, grid_rows: dict, columns: int) -> None:
    """grids/<method>.png: one row per point of the method, upscaled 2x on white padding."""
    import torch

    from ..monitor import save_grid

    for method, rows in grid_rows.items():
        save_grid(torch.cat(rows), folder / f"{method}.png", nrow=columns, upscale=2, pad_value=1.0)


def build_report(cfg, base, base_model_path: Path | None, training: dict, points: list[dict]) -> dict:
    """report.json's content (without seconds_total)."""
    import torch

    from . import pipeline as pl

    return {
        "config": vars(cfg) if not hasattr(cfg, "__dataclass_fields__") else _config_dict(cfg),
        "base_model": {"unet_parameters": sum(p.numel() for p in base.unet.parameters()),
                       "file": str(base_model_path or "shipped")},
        "reward": "yellowness = mean(min(R, G) - B)",
        "eval_prompts": list(pl.EVAL_PROMPTS),
        "training": training,
        "points": points,
        "comparison": compare_at_matched_reward(points),
        "determinism": DETERMINISM_NOTE,
        "torch_threads": torch.get_num_threads(),
    }


def write_outputs(out: Path, report: dict, figures: bool) -> None:
    """report.json, pareto.png (with figures) and report.md."""
    from .report import pareto_plot, write_json, write_markdown

    write_json(out / "report.json", report)
    if figures:
        pareto_plot(out / "pareto.png", report["points"])
    write_markdown(out / "report.md", report, conclusion_text(report["comparison"]))


def _config_dict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """Linear interpolation of y(x) on sorted xs; None outside the range."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def compare_at_matched_reward(points: list[dict]) -> list[dict]:
    """For each AIG and KL point: LoRA scaling's Vendi / SCD / recall interpolated at the same reward."""
    curve = sorted([p for p in points if p["method"] in ("base", "lora-scale", "tuned")],
                   key=lambda p: p["reward_mean"])
    rewards = [p["reward_mean"] for p in curve]
    rows = []
    for p in points:
        if p["method"] not in ("aig", "aig-window", "kl"):
            continue
        row = {"label": p["label"], "method": p["method"], "reward_mean": p["reward_mean"]}
        for key in ("vendi", "scd", "log_scd", "recall"):
            row[f"point_{key}"] = p[key]
            row[f"lora_scale_{key}"] = _interpolate(rewards, [c[key] for c in curve], p["reward_mean"])
        rows.append(row)
    return rows


def conclusion_text(rows: list[dict]) -> str:
    """Per method and metric: at how many matched-reward points it beats LoRA scaling."""
    lines = ["At matched reward (the LoRA-scaling curve base - scales - tuned, interpolated linearly at each "
             "point's reward):"]
    metrics = (("vendi", "Vendi", 1), ("scd", "SCD", -1), ("log_scd", "log-SCD", -1), ("recall", "recall", 1))
    for method, name in (("aig", "AIG power"), ("aig-window", "cost-aware AIG"), ("kl", "KL training")):
        group = [r for r in rows if r["method"] == method and r["lora_scale_vendi"] is not None]
        outside = len([r for r in rows if r["method"] == method]) - len(group)
        if not group and not outside:
            continue
        parts = []
        for key, label, sign in metrics:
            wins = sum(sign * (r[f"point_{key}"] - r[f"lora_scale_{key}"]) > 0 for r in group)
            parts.append(f"{label} better at {wins}/{len(group)}")
        note = f" ({outside} outside the LoRA-scaling reward range)" if outside else ""
        lines.append(f"- {name}: " + ", ".join(parts) + note)
    return "\n".join(lines)

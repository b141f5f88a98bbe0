"""`comfy-aig demo [--out DIR] [--quick] [--reward NAME ...] [--seeds S ...]`: reward hacking and the AIG front on CPU.

Steps: load the shipped toy base model, sample the base reference set, train a DRaFT-1 LoRA on
the chosen reward (and one per KL weight), export each LoRA as a kohya file and load it back,
then sample every point (base, tuned, AIG power p, cost-aware AIG windows, LoRA scales, KL) on the
same prompts and noise, and write report.json, report.md, pareto.png and grids/<method>.png.
Diversity is measured in two spaces: the demo feature net's penultimate features (primary table,
the demo's Inception) and 8x8-pooled pixels (second table).

With several seeds each seed's run goes to seed_<s>/ and the folder's report gives mean and std per point
(aggregate.py); with several rewards each reward gets its own folder <reward>/ and out/report.md links them.
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
    parser.add_argument("--quick", action="store_true", help="smaller run for CI (under 1 minute)")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts, noise and LoRA init (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="repeat training and evaluation over these seeds and report mean and std (overrides --seed)")
    parser.add_argument("--reward", nargs="+", default=["yellowness"], metavar="NAME",
                        help="reward(s) to hack: yellowness (texture hack) and/or classifier-blue (mode collapse); "
                             "default yellowness")
    parser.add_argument("--base-model", type=Path, default=None,
                        help="demo base model .safetensors (default: the one shipped in training/demo)")


def run(args: argparse.Namespace) -> int:
    """Run the demo into args.out for every reward and seed; returns 0."""
    from .aggregate import aggregate_reports, write_aggregate, write_index
    from .pipeline import DemoConfig
    from .reward import REWARDS

    for name in args.reward:
        if name not in REWARDS:
            raise SystemExit(f"comfy-aig demo: unknown reward '{name}'; valid: {', '.join(REWARDS)}")
    seeds = list(dict.fromkeys(args.seeds)) if args.seeds else [args.seed]
    out, start, folders = Path(args.out), time.time(), {}
    for name in dict.fromkeys(args.reward):
        folder = out if len(args.reward) == 1 else out / name
        folders[name] = folder
        reports = []
        for seed in seeds:
            cfg = DemoConfig.quick(seed, name) if args.quick else DemoConfig.full(seed, name)
            reports.append(run_demo(cfg, folder if len(seeds) == 1 else folder / f"seed_{seed}", args.base_model))
        if len(seeds) > 1:
            write_aggregate(folder, aggregate_reports(reports))
    if len(folders) > 1:
        write_index(out, folders, round(time.time() - start, 1))
    logger.info("demo done in %.0f s: %s", time.time() - start, out / "report.md")
    return 0


def run_demo(cfg, out: Path, base_model_path: Path | None = None, figures: bool = True) -> dict:
    """The whole experiment for a DemoConfig; writes the outputs into `out` and returns the report dict."""
    import torch

    from .model import DemoBaseModel
    from .reward import make_reward

    start = time.time()
    (out / "grids").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    base = DemoBaseModel.load(base_model_path)
    reward = make_reward(cfg.reward)
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


def evaluate_points(models: dict, reward, cfg, latent_shape, extractors: dict | None = None) -> tuple[list[dict], dict]:
    """Every sweep point on the shared prompts and noise: (report entries, image rows per method for the grids)."""
    from . import pipeline as pl

    extractors = extractors or pl.feature_extractors()
    prompts, noise = pl.eval_inputs(cfg, latent_shape)
    points, grid_rows = [], {}
    refs = None  # the base point's features in every space: the diversity reference of every point
    for point in pl.sweep_points(cfg):
        t0 = time.time()
        model = models["base" if point.mode == "base" else point.adapter]
        images, nfe = pl.sample_point(model, point, cfg, prompts, noise)
        if point.method == "base":
            refs = pl.reference_features(extractors, images)
        metrics = pl.point_metrics(reward, images, refs, extractors)
        entry = {**pl.describe(point), **{k: round(float(v), 6) for k, v in metrics.items()},
                 "nfe_per_image": nfe, "seconds": round(time.time() - t0, 1)}
        points.append(entry)
        grid_rows.setdefault(point.method, []).append(images[: cfg.grid_images])
        logger.info("%-34s reward %.3f  vendi %.2f  scd %.1f  recall %.3f  (pixels: vendi %.2f scd %.1f)  nfe %d",
                    point.label, entry["reward_mean"], entry["vendi"], entry["scd"], entry["recall"],
                    entry["pixel_vendi"], entry["pixel_scd"], nfe)
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
    from .reward import REWARDS

    return {
        "config": vars(cfg) if not hasattr(cfg, "__dataclass_fields__") else _config_dict(cfg),
        "base_model": {"unet_parameters": sum(p.numel() for p in base.unet.parameters()),
                       "file": str(base_model_path or "shipped")},
        "reward": REWARDS[cfg.reward][0],
        "reward_name": cfg.reward,
        "feature_net": feature_net_record(),
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
        pareto_plot(out / "pareto.png", report["points"], report.get("reward_name", "reward"))
    write_markdown(out / "report.md", report, conclusion_text(report["comparison"], 1))


def _config_dict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """Linear interpolation of y(x) on sorted xs; None outside the range."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def feature_net_record() -> dict:
    """The shipped feature net's training record (command, time, held-out accuracy) from its JSON."""
    import json

    from .featnet import PACKAGE_DIR, RECORD_NAME

    path = PACKAGE_DIR / RECORD_NAME
    if not path.is_file():
        return {}
    training = json.loads(path.read_text()).get("training", {})
    return {k: training[k] for k in ("command", "seconds", "held_out_accuracy", "parameters") if k in training}


# metrics of the matched-reward comparison: (key, title, +1 if higher is better)
COMPARED = (("vendi", "Vendi", 1), ("scd", "SCD", -1), ("log_scd", "log-SCD", -1), ("recall", "recall", 1),
            ("fid", "FID", -1))
BASELINES = (("lora_scale", "LoRA scaling", ("base", "lora-scale", "tuned")), ("kl", "KL training", ("base", "kl", "tuned")))


def compare_at_matched_reward(points: list[dict]) -> list[dict]:
    """For each AIG and KL point: each baseline curve's metrics (both spaces) interpolated at the same reward.

    Baselines: LoRA scaling (base - scales - tuned) and KL training (base - lambdas - tuned, lambda = 0 is DRaFT).
    Keys: point_<m>, lora_scale_<m>, kl_<m> for m in COMPARED and pixel_<m> (None outside the curve's reward range).
    """
    keys = [prefix + key for _, prefix in (("featnet", ""), ("pixels", "pixel_")) for key, _, _ in COMPARED]
    curves = {}
    for name, _, methods in BASELINES:
        curve = sorted([p for p in points if p["method"] in methods], key=lambda p: p["reward_mean"])
        curves[name] = curve if any(p["method"] == methods[1] for p in curve) else []
    rows = []
    for p in points:
        if p["method"] not in ("aig", "aig-window", "kl"):
            continue
        row = {"label": p["label"], "method": p["method"], "reward_mean": p["reward_mean"]}
        for key in keys:
            row[f"point_{key}"] = p[key]
            for name, curve in curves.items():
                if name == "kl" and p["method"] == "kl":
                    continue
                row[f"{name}_{key}"] = (_interpolate([c["reward_mean"] for c in curve], [c[key] for c in curve],
                                                     p["reward_mean"]) if curve else None)
        rows.append(row)
    return rows


def conclusion_text(rows: list[dict], seeds: int) -> str:
    """Per method, baseline and metric: at how many matched-reward points it is better / worse (beyond spread)."""
    lines = ["At matched reward (each baseline curve interpolated linearly at the point's reward; "
             "primary metrics on feature-net features, pixel metrics in brackets):"]
    for method, name in (("aig", "AIG power"), ("aig-window", "cost-aware AIG"), ("kl", "KL training")):
        for base_key, base_name, _ in BASELINES:
            if method == "kl" and base_key == "kl":
                continue
            group = [r for r in rows if r["method"] == method and r.get(f"{base_key}_vendi") is not None]
            total = len([r for r in rows if r["method"] == method])
            if not total or not group:
                continue
            parts = []
            for key, label, sign in COMPARED:
                wins = [_better(r, base_key, key, sign) for r in group]
                pix = [_better(r, base_key, "pixel_" + key, sign) for r in group]
                parts.append(f"{label} better at {sum(w is True for w in wins)}/{len(group)}, worse at "
                             f"{sum(w is False for w in wins)} [pixels: better {sum(w is True for w in pix)}, "
                             f"worse {sum(w is False for w in pix)}]")
            note = f" ({total - len(group)} outside the reward range)" if total > len(group) else ""
            lines.append(f"- {name} vs {base_name}: " + "; ".join(parts) + note)
    lines.append("(Better / worse counts only differences larger than their std over seeds; the rest are within "
                 "the spread.)" if seeds > 1 else "(One seed: no spread measured, every difference counts.)")
    return "\n".join(lines)


def _better(row: dict, base_key: str, key: str, sign: int) -> bool | None:
    """True/False if the point beats / loses to the baseline on `key` beyond the spread; None if within or missing."""
    base = row.get(f"{base_key}_{key}")
    if base is None:
        return None
    diff = sign * (row[f"point_{key}"] - base)
    spread = row.get(f"diff_std_{base_key}_{key}", 0.0) or 0.0
    if abs(diff) <= spread or diff == 0:
        return None
    return diff > 0

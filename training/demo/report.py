"""The demo's outputs: report.json, report.md (table) and pareto.png (reward vs diversity)."""

from __future__ import annotations

import json
from pathlib import Path

from ...core.files import atomic_write, atomic_write_text

TABLE_COLUMNS = (
    ("label", "point", "{}"),
    ("reward_mean", "reward", "{:.3f}"),
    ("reward_std", "reward std", "{:.3f}"),
    ("scd", "SCD", "{:.1f}"),
    ("log_scd", "log-SCD", "{:.1f}"),
    ("recall", "recall", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("vendi", "Vendi", "{:.2f}"),
    ("fid", "FID", "{:.1f}"),
    ("nfe_per_image", "UNet evals / image", "{}"),
)
DIVERSITY_KEYS = ("scd", "log_scd", "recall", "precision", "vendi", "fid")
SPACE_TITLES = {"": "feature net", "pixel_": "pixels"}

METHOD_STYLE = {
    "base": ("black", "o"),
    "tuned": ("red", "X"),
    "aig": ("tab:blue", "o"),
    "aig-window": ("tab:cyan", "D"),
    "lora-scale": ("tab:orange", "s"),
    "kl": ("tab:green", "^"),
}


def _write_text(path: Path, text: str) -> None:
    """A report file, atomically and readable by everyone."""
    atomic_write_text(path, text, mode=0o644)


def write_json(path: Path, report: dict) -> None:
    """report.json, written atomically."""
    _write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")


def markdown_table(points: list[dict], prefix: str = "") -> str:
    """One row per point with every metric of TABLE_COLUMNS; diversity keys read as prefix + key.

    A value with a `<key>_std` beside it (several seeds) is written "mean ± std".
    """
    head = "| " + " | ".join(f"{title} ({SPACE_TITLES[prefix]})" if key == "fid" else title
                             for key, title, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    rows = [head, rule]
    for point in points:
        cells = []
        for key, _, fmt in TABLE_COLUMNS:
            key = prefix + key if key in DIVERSITY_KEYS else key
            cell = fmt.format(point[key])
            if f"{key}_std" in point:
                cell += " ± " + fmt.format(point[f"{key}_std"])
            cells.append(cell)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


COMPARISON_KEYS = (("vendi", "Vendi", 1), ("scd", "SCD", -1), ("log_scd", "log-SCD", -1), ("recall", "recall", 1),
                   ("fid", "FID", -1))


def comparison_table(rows: list[dict], prefix: str = "") -> str:
    """Matched-reward comparison, one row per (point, baseline): point value vs the baseline's, and a verdict.

    Verdict: better / worse when |difference| > its std over seeds (or any difference with one seed),
    otherwise "within spread".
    """
    head = "| point | vs | reward | " + " | ".join(title for _, title, _ in COMPARISON_KEYS) + " |"
    rows_md = [head, "|" + "|".join("---" for _ in range(3 + len(COMPARISON_KEYS))) + "|"]
    for row in rows:
        for base, base_title in (("lora_scale", "LoRA scaling"), ("kl", "KL")):
            if row.get(f"{base}_{prefix}vendi") is None:
                continue
            cells = [row["label"], base_title, f"{row['reward_mean']:.3f}"]
            for key, _, sign in COMPARISON_KEYS:
                key = prefix + key
                point, other = row[f"point_{key}"], row[f"{base}_{key}"]
                spread = row.get(f"diff_std_{base}_{key}")
                diff = sign * (point - other)
                verdict = ("within spread" if spread is not None and abs(diff) <= spread else
                           "better" if diff > 0 else "worse" if diff < 0 else "tie")
                spread_text = f" (diff ± {spread:.3g})" if spread is not None else ""
                cells.append(f"{point:.3g} vs {other:.3g}{spread_text}: {verdict}")
            rows_md.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows_md)


def write_markdown(path: Path, report: dict, conclusion: str) -> None:
    """report.md: settings, training summary, both tables, the plot and the conclusion."""
    cfg = report["config"]
    seeds = report.get("seeds", [cfg["seed"]])
    net = report.get("feature_net", {})
    accuracy = net.get("held_out_accuracy", {})
    acc = "; ".join(f"{name}: " + ", ".join(f"{head} {value:.3f}" for head, value in heads.items())
                    for name, heads in accuracy.items())
    lines = [
        "# comfy-aig demo report",
        "",
        f"Toy world 32x32, base UNet {report['base_model']['unet_parameters']:,} parameters (v-prediction), "
        f"reward: {report['reward']}. {cfg['eval_images']} images per point, same prompts "
        f"({', '.join(report['eval_prompts'])}) and seeds at every point; DDIM {cfg['steps']} steps, "
        f"CFG {cfg['guidance_scale']}. Seeds: {', '.join(str(s) for s in seeds)}"
        + (" (values are mean ± std over seeds)." if len(seeds) > 1 else "."),
        "",
        "Primary diversity metrics are on the demo feature net's penultimate features (the demo's Inception: a "
        "CNN trained on world images with varied backgrounds, tints, noise and speckle; held-out accuracy "
        f"{acc or 'not recorded'}). The second table measures on 8x8-pooled pixels. In both spaces the features "
        "are centred on the base samples and divided by one global scale; reference set = base samples.",
        "",
        "## Training",
        "",
    ]
    for name, run in report["training"].items():
        first, last = run["curve"][0], run["curve"][-1]
        lines.append(f"- {name}: reward {first['reward_mean']:.3f} -> {last['reward_mean']:.3f}, "
                     f"KL {first['kl']:.4f} -> {last['kl']:.4f}, {len(run['curve'])} steps, {run['seconds']:.0f} s")
    grid_dir = "grids" if len(seeds) == 1 else f"seed_{seeds[0]}/grids"
    lines += ["", "## Points: feature-net features (primary)", "", markdown_table(report["points"]), "",
              "## Points: 8x8-pooled pixels", "", markdown_table(report["points"], "pixel_"), "",
              "![pareto](pareto.png)", "", "## Image grids", "",
              f"One row per point, same prompts and noise in every column ({grid_dir}/<method>.png):", ""]
    for method in dict.fromkeys(p["method"] for p in report["points"]):
        rows = [p["label"] for p in report["points"] if p["method"] == method]
        lines.append(f"- {grid_dir}/{method}.png: " + "; ".join(rows))
    lines += ["", "## Matched-reward comparison: feature net", "", comparison_table(report["comparison"]), "",
              "## Matched-reward comparison: pixels", "", comparison_table(report["comparison"], "pixel_"), ""]
    lines += ["", "## Conclusion", "", conclusion, "", f"Total time: {report['seconds_total']:.0f} s.", ""]
    _write_text(path, "\n".join(lines))


def pareto_plot(path: Path, points: list[dict], reward_name: str = "reward") -> None:
    """pareto.png: reward vs Vendi, SCD and recall, feature net (top row) and pixels (bottom); std bars if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = (("vendi", "Vendi (higher = more diverse)"), ("scd", "SCD vs base (lower = closer to base)"),
              ("recall", "recall vs base (k=5)"))
    for axes, prefix in zip(grid, ("", "pixel_")):
        for ax, (key, title) in zip(axes, panels):
            key = prefix + key
            for method, (colour, marker) in METHOD_STYLE.items():
                group = [p for p in points if p["method"] == method]
                if not group:
                    continue
                line = _with_endpoints(method, group, points)
                if line is not None:
                    ax.plot([p[key] for p in line], [p["reward_mean"] for p in line], color=colour, alpha=0.6)
                xerr = [p.get(f"{key}_std", 0.0) for p in group]
                yerr = [p.get("reward_mean_std", 0.0) for p in group]
                ax.errorbar([p[key] for p in group], [p["reward_mean"] for p in group], xerr=xerr, yerr=yerr,
                            marker=marker, color=colour, label=method, linestyle="none", capsize=2)
                for p in group:
                    if p["parameter"] is not None and method != "tuned":
                        ax.annotate(f"{p['parameter']:g}", (p[key], p["reward_mean"]), fontsize=7,
                                    textcoords="offset points", xytext=(3, 3))
            if key.endswith("scd"):
                ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlabel(f"{title} [{SPACE_TITLES[prefix]}]")
            ax.set_ylabel(f"reward ({reward_name})")
            ax.grid(alpha=0.3)
    grid[0][0].legend(fontsize=8)
    fig.suptitle("Reward vs diversity on the same prompts and seeds (top: feature net, bottom: pixels)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def _with_endpoints(method: str, group: list[dict], points: list[dict]) -> list[dict] | None:
    """The method's curve closed by its limits: AIG p -> inf and LoRA scale 0 are base, p = 0 / scale 1 tuned."""
    ends = {p["method"]: p for p in points if p["method"] in ("base", "tuned")}
    if method in ("aig", "lora-scale"):
        line = [ends.get("base"), *group, ends.get("tuned")]
    elif method == "kl":
        line = [*group, ends.get("tuned")]
    else:
        return None
    return sorted([p for p in line if p is not None], key=lambda p: p["reward_mean"])


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
    ("fid", "FID (pixels)", "{:.1f}"),
    ("nfe_per_image", "UNet evals / image", "{}"),
)

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


def markdown_table(points: list[dict]) -> str:
    """One row per point with every metric of TABLE_COLUMNS."""
    head = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    rows = [head, rule]
    for point in points:
        cells = [fmt.format(point[key]) for key, _, fmt in TABLE_COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_markdown(path: Path, report: dict, conclusion: str) -> None:
    """report.md: settings, training summary, the table, the plot and the conclusion."""
    cfg = report["config"]
    lines = [
        "# comfy-aig demo report",
        "",
        f"Toy world 32x32, base UNet {report['base_model']['unet_parameters']:,} parameters (v-prediction), "
        f"reward: {report['reward']}. {cfg['eval_images']} images per point, same prompts "
        f"({', '.join(report['eval_prompts'])}) and seeds at every point; DDIM {cfg['steps']} steps, "
        f"CFG {cfg['guidance_scale']}. Diversity metrics on 8x8-pooled pixels, centred on the base samples "
        "and divided by one global scale; reference set = base samples.",
        "",
        "## Training",
        "",
    ]
    for name, run in report["training"].items():
        first, last = run["curve"][0], run["curve"][-1]
        lines.append(f"- {name}: reward {first['reward_mean']:.3f} -> {last['reward_mean']:.3f}, "
                     f"KL {first['kl']:.4f} -> {last['kl']:.4f}, {len(run['curve'])} steps, {run['seconds']:.0f} s")
    lines += ["", "## Points", "", markdown_table(report["points"]), "", "![pareto](pareto.png)", "",
              "## Image grids", "",
              "One row per point, same prompts and noise in every column (grids/<method>.png):", ""]
    for method in dict.fromkeys(p["method"] for p in report["points"]):
        rows = [p["label"] for p in report["points"] if p["method"] == method]
        lines.append(f"- grids/{method}.png: " + "; ".join(rows))
    lines += ["", "## Conclusion", "", conclusion, "", f"Total time: {report['seconds_total']:.0f} s.", ""]
    _write_text(path, "\n".join(lines))


def pareto_plot(path: Path, points: list[dict]) -> None:
    """pareto.png: reward vs Vendi and reward vs log-SCD (lower = closer to base), one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, title) in zip(axes, (("vendi", "Vendi (higher = more diverse)"),
                                       ("scd", "SCD vs base (lower = closer to base diversity)"),
                                       ("recall", "recall vs base (k=5)"))):
        for method, (colour, marker) in METHOD_STYLE.items():
            group = [p for p in points if p["method"] == method]
            if not group:
                continue
            line = _with_endpoints(method, group, points)
            if line is not None:
                ax.plot([p[key] for p in line], [p["reward_mean"] for p in line], color=colour, alpha=0.6)
            ax.plot([p[key] for p in group], [p["reward_mean"] for p in group], marker=marker, color=colour,
                    label=method, linestyle="none")
            for p in group:
                if p["parameter"] is not None and method != "tuned":
                    ax.annotate(f"{p['parameter']:g}", (p[key], p["reward_mean"]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
        if key == "scd":
            ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel(title)
        ax.set_ylabel("reward (yellowness)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Reward vs diversity on the same prompts and seeds")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
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


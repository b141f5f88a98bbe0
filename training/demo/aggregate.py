"""Error bars for the demo: the per-seed reports of one reward combined into mean and std per point.

Every numeric value of a point becomes the mean over seeds, with `<key>_std` (sample std, ddof 1) beside it.
The matched-reward comparison is made per seed (each seed's AIG point against that seed's baseline curves)
and then combined: `diff_mean_<baseline>_<metric>` and `diff_std_<baseline>_<metric>` over the seeds where
the point lies inside the baseline's reward range; a difference counts as better or worse only when
|mean difference| > its std over seeds.
"""

from __future__ import annotations

import statistics
from pathlib import Path

NON_NUMERIC = ("method", "label", "mode", "parameter", "schedule", "lora_scale", "adapter")


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return round(mean, 6), round(statistics.stdev(values), 6) if len(values) > 1 else 0.0


def aggregate_points(per_seed: list[list[dict]]) -> list[dict]:
    """Points matched by label over seeds -> one entry per label with mean values and `<key>_std`."""
    out = []
    for first in per_seed[0]:
        same = [next(p for p in points if p["label"] == first["label"]) for points in per_seed]
        entry = {k: first[k] for k in NON_NUMERIC if k in first}
        for key, value in first.items():
            if key in NON_NUMERIC or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            entry[key], entry[f"{key}_std"] = _mean_std([float(p[key]) for p in same])
        entry["nfe_per_image"] = first["nfe_per_image"]
        entry.pop("nfe_per_image_std", None)
        out.append(entry)
    return out


def aggregate_comparison(per_seed: list[list[dict]]) -> list[dict]:
    """Per-seed matched-reward rows -> mean point/baseline values and the mean and std of their differences."""
    rows = []
    for first in per_seed[0]:
        same = [next(r for r in rows_s if r["label"] == first["label"]) for rows_s in per_seed]
        row = {"label": first["label"], "method": first["method"],
               "reward_mean": _mean_std([r["reward_mean"] for r in same])[0]}
        for key in first:
            if not key.startswith("point_"):
                continue
            metric = key[len("point_"):]
            row[key] = _mean_std([r[key] for r in same])[0]
            for base in ("lora_scale", "kl"):
                name = f"{base}_{metric}"
                if name not in first:
                    continue
                pairs = [(r[key], r[name]) for r in same if r.get(name) is not None]
                if len(pairs) < len(same):  # outside the baseline's range for some seed: no matched value
                    row[name] = None
                    continue
                row[name] = _mean_std([b for _, b in pairs])[0]
                row[f"diff_mean_{name}"], row[f"diff_std_{name}"] = _mean_std([a - b for a, b in pairs])
        rows.append(row)
    return rows


def aggregate_reports(reports: list[dict]) -> dict:
    """One report (report.json layout) from the per-seed reports of one reward."""
    first = reports[0]
    seeds = [r["config"]["seed"] for r in reports]
    training = {f"{name} (seed {seed})": run for seed, r in zip(seeds, reports) for name, run in r["training"].items()}
    return {
        **{k: first[k] for k in ("config", "base_model", "reward", "reward_name", "feature_net", "eval_prompts",
                                  "determinism", "torch_threads") if k in first},
        "seeds": seeds,
        "training": training,
        "points": aggregate_points([r["points"] for r in reports]),
        "comparison": aggregate_comparison([r["comparison"] for r in reports]),
        "seconds_per_seed": [r["seconds_total"] for r in reports],
        "seconds_total": round(sum(r["seconds_total"] for r in reports), 1),
    }


def write_aggregate(folder: Path, report: dict) -> None:
    """report.json, pareto.png (error bars) and report.md of the combined seeds in `folder`."""
    from .demo_cli import conclusion_text
    from .report import pareto_plot, write_json, write_markdown

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report)
    pareto_plot(folder / "pareto.png", report["points"], report.get("reward_name", "reward"))
    write_markdown(folder / "report.md", report, conclusion_text(report["comparison"], len(report["seeds"])))


def write_index(out: Path, folders: dict, seconds: float) -> None:
    """out/report.md linking each reward's report, with each one's primary (feature-net) table."""
    import json

    from .report import _write_text, markdown_table

    lines = ["# comfy-aig demo: every reward", ""]
    for name, folder in folders.items():
        report = json.loads((folder / "report.json").read_text())
        rel = folder.relative_to(out)
        lines += [f"## {name}: {report['reward']}", "", f"Full report: [{rel}/report.md]({rel}/report.md)", "",
                  markdown_table(report["points"]), "", f"![pareto]({rel}/pareto.png)", ""]
    lines += [f"Total time: {seconds:.0f} s.", ""]
    _write_text(out / "report.md", "\n".join(lines))

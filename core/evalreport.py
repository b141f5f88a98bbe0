"""Evaluation report: every run label's diversity metrics against a reference label, as JSON, CSV and a plot.

The reference is normally the base model's samples with the same prompts and seeds (Jena et al. 2024,
sec. 5); the plot shows mean reward against one diversity metric with the Pareto front marked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np

from .diversity import METRIC_KEYS, DiversityInputError, diversity_metrics
from .evalset import EvalSetError, LabelData, atomic_write_bytes

HIGHER_IS_BETTER = {"precision": True, "recall": True, "vendi": True, "vendi_ref": True, "pairwise_cosine": True,
                    "scd": False, "log_scd": False, "fid": False, "reward_mean": True}
ROW_KEYS = ("label", "runs", "n", "n_paired", "reward_mean", "reward_std", "missing_scores", *METRIC_KEYS, "note")


def _finite_or_none(value):
    return None if value is None or not math.isfinite(value) else float(value)


def label_row(data: LabelData, ref: LabelData, k: int) -> dict:
    """One report row: counts, reward statistics and diversity_metrics(ref, data) (None with a note if too few)."""
    ref_keys = set(ref.keys)
    row = {"label": data.label, "runs": data.runs, "n": int(data.features.shape[0]),
           "n_paired": sum(key in ref_keys for key in data.keys),
           "reward_mean": None, "reward_std": None, "missing_scores": data.missing_scores, "note": ""}
    if data.scores is not None and data.scores.size:
        row["reward_mean"] = _finite_or_none(float(np.mean(data.scores)))
        row["reward_std"] = _finite_or_none(float(np.std(data.scores)))
    try:
        metrics = diversity_metrics(ref.features, data.features, k=k)
    except DiversityInputError as error:
        metrics = dict.fromkeys(METRIC_KEYS)
        row["note"] = str(error)
    row.update({key: _finite_or_none(value) for key, value in metrics.items()})
    return {key: row[key] for key in ROW_KEYS}


def evaluate_labels(groups: dict[str, LabelData], reference_label: str, k: int = 5) -> list[dict]:
    """Rows for every label (reference first) against groups[reference_label]."""
    if reference_label not in groups:
        raise EvalSetError(
            f"reference label {reference_label!r} has no runs in this set (labels: {sorted(groups)}); "
            "collect the base model's samples under that label first, or pick one of the listed labels."
        )
    ref = groups[reference_label]
    order = [reference_label] + [label for label in groups if label != reference_label]
    return [label_row(groups[label], ref, k) for label in order]


def report_json(rows: list[dict], meta: dict) -> bytes:
    """JSON document {meta..., rows: [...]} (NaN-free: missing values are null)."""
    return json.dumps({**meta, "rows": rows}, indent=2, sort_keys=False, allow_nan=False).encode("utf-8")


def report_csv(rows: list[dict]) -> bytes:
    """CSV with one header line (ROW_KEYS) and one line per label; missing values are empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ROW_KEYS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in ROW_KEYS})
    return buffer.getvalue().encode("utf-8")


def pareto_front(points: list[tuple[float, float]], x_higher_better: bool, y_higher_better: bool = True) -> list[int]:
    """Indices of points not dominated by another (at least as good on both axes, better on one)."""
    sx, sy = (1 if x_higher_better else -1), (1 if y_higher_better else -1)
    keep = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            sx * xj >= sx * xi and sy * yj >= sy * yi and (sx * xj > sx * xi or sy * yj > sy * yi)
            for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


SAFE_FILE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=+,")
MAX_STEM_CHARS = 120


def report_stem(reference_label: str) -> str:
    """File stem for a report: 'report_' + the label with every other character as %XX (UTF-8), so that
    distinct labels never share a file; over MAX_STEM_CHARS it is cut and ends in a hash of the label."""
    encoded = "".join(c if c in SAFE_FILE_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
                      for c in reference_label)
    stem = f"report_{encoded}"
    if len(stem) > MAX_STEM_CHARS:
        digest = hashlib.sha256(reference_label.encode("utf-8")).hexdigest()[:12]
        stem = f"{stem[:MAX_STEM_CHARS - 13]}~{digest}"
    return stem


def family_of(label: str) -> str:
    """Plot family of a label: the text before ':' ("aig:p=2" -> "aig"); the whole label otherwise."""
    return label.split(":", 1)[0] if ":" in label else label


def why_not_plottable(rows: list[dict], x_metric: str, y_metric: str) -> str:
    """Empty string if some row has both values; otherwise the reason and the fix."""
    if any(r.get(x_metric) is not None and r.get(y_metric) is not None for r in rows):
        return ""
    return (f"no label has both {y_metric} and {x_metric} yet: connect a reward model (or scores) to the "
            "collect node and collect at least k + 1 images per label.")


def plot_tradeoff(rows: list[dict], x_metric: str = "vendi", y_metric: str = "reward_mean", title: str = "") -> bytes:
    """PNG bytes of y_metric (reward) against x_metric per label; families joined, Pareto front ringed."""
    for metric in (x_metric, y_metric):
        if metric not in HIGHER_IS_BETTER:
            raise EvalSetError(f"cannot plot {metric!r}; choose one of {sorted(HIGHER_IS_BETTER)}.")
    reason = why_not_plottable(rows, x_metric, y_metric)
    if reason:
        raise EvalSetError(reason)
    usable = [r for r in rows if r[x_metric] is not None and r[y_metric] is not None]
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # local: no global backend switch
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    families: dict[str, list[dict]] = {}
    for row in usable:
        families.setdefault(family_of(row["label"]), []).append(row)
    handles, names = [], []
    for family, members in families.items():
        members = sorted(members, key=lambda r: r[x_metric])
        xs, ys = [r[x_metric] for r in members], [r[y_metric] for r in members]
        (line,) = ax.plot(xs, ys, marker="o", linestyle="-" if len(members) > 1 else "none")
        handles.append(line)
        names.append(family)
        for r in members:  # labels are data: never parsed as mathtext
            ax.annotate(r["label"], (r[x_metric], r[y_metric]), fontsize=7, xytext=(3, 3), textcoords="offset points",
                        parse_math=False)
    front = pareto_front([(r[x_metric], r[y_metric]) for r in usable], HIGHER_IS_BETTER[x_metric],
                         HIGHER_IS_BETTER[y_metric])
    handles.append(ax.scatter([usable[i][x_metric] for i in front], [usable[i][y_metric] for i in front], s=160,
                              facecolors="none", edgecolors="black"))
    names.append("Pareto front")
    better = "higher = more diverse" if HIGHER_IS_BETTER[x_metric] else "lower = closer to the reference"
    ax.set_xlabel(f"{x_metric} vs reference ({better})")
    ax.set_ylabel(y_metric)
    ax.set_title(title or f"{y_metric} vs {x_metric}", parse_math=False)
    ax.grid(True, alpha=0.3)
    legend = ax.legend(handles, names, fontsize=7)  # explicit names: a family starting with '_' is kept
    for text in legend.get_texts():
        text.set_parse_math(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(rows: list[dict], folder: Path, stem: str, meta: dict, x_metric: str = "vendi",
                 y_metric: str = "reward_mean") -> dict[str, Path]:
    """Atomically write <stem>.json, <stem>.csv and, when some row can be drawn, <stem>.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / f"{stem}.json", "csv": folder / f"{stem}.csv"}
    atomic_write_bytes(paths["json"], report_json(rows, meta))
    atomic_write_bytes(paths["csv"], report_csv(rows))
    if not why_not_plottable(rows, x_metric, y_metric):
        paths["png"] = folder / f"{stem}.png"
        atomic_write_bytes(paths["png"], plot_tradeoff(rows, x_metric, y_metric, title=meta.get("title", "")))
    return paths

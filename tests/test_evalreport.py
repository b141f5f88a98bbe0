"""Evaluation report: rows per label vs the reference, JSON/CSV/PNG output, Pareto front."""

import csv
import json

import numpy as np
import pytest

from comfy_aig.core import evalreport as er
from comfy_aig.core import evalset as es
from comfy_aig.core.diversity import diversity_metrics


@pytest.fixture
def filled_set(tmp_path):
    """base: spread features; collapsed: near one point, higher reward; few: too small for k = 5."""
    rng = np.random.default_rng(0)
    store = es.EvalSet(tmp_path, "sweep")
    for seed in range(4):
        store.append(es.EvalRecord.for_batch("base", rng.standard_normal((4, 6)), f"p{seed}", seed,
                                             scores=np.full(4, 0.1)))
        store.append(es.EvalRecord.for_batch("lora:1.0", 0.05 * rng.standard_normal((4, 6)), f"p{seed}", seed,
                                             scores=np.full(4, 0.9)))
        store.append(es.EvalRecord.for_batch("aig:p=2", 0.6 * rng.standard_normal((4, 6)), f"p{seed}", seed + 100,
                                             scores=np.full(4, 0.6)))
    store.append(es.EvalRecord.for_batch("few", rng.standard_normal((3, 6)), "p0", 0))
    return store


def test_rows_match_diversity_metrics_against_reference(filled_set):
    groups = filled_set.by_label()
    rows = er.evaluate_labels(groups, "base", k=5)
    assert [r["label"] for r in rows] == ["base", "lora:1.0", "aig:p=2", "few"]
    base, lora, aig, few = rows
    expected = diversity_metrics(groups["base"].features, groups["lora:1.0"].features, k=5)
    for key, value in expected.items():
        assert lora[key] == pytest.approx(value, rel=1e-12)
    assert base["scd"] == 0.0 and base["recall"] == 1.0
    assert lora["recall"] < aig["recall"] <= 1.0
    assert (lora["n"], lora["n_paired"], aig["n_paired"]) == (16, 16, 0)  # aig used other seeds
    assert lora["reward_mean"] == pytest.approx(0.9) and few["reward_mean"] is None
    assert few["scd"] is None and "at least 6" in few["note"]


def test_unknown_reference_label_names_the_labels(filled_set):
    with pytest.raises(es.EvalSetError, match="'lora:1.0'"):
        er.evaluate_labels(filled_set.by_label(), "sd15", k=5)


def test_write_report_json_csv_png_round_trip(filled_set, tmp_path):
    rows = er.evaluate_labels(filled_set.by_label(), "base", k=5)
    paths = er.write_report(rows, tmp_path / "out", "report", {"set": "sweep", "reference": "base"})
    doc = json.loads(paths["json"].read_text())
    assert doc["reference"] == "base" and doc["rows"] == rows
    with open(paths["csv"], newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["label"] for r in table] == [r["label"] for r in rows]
    assert float(table[1]["scd"]) == pytest.approx(rows[1]["scd"]) and table[3]["scd"] == ""
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_without_rewards_writes_tables_but_no_plot(tmp_path):
    rng = np.random.default_rng(1)
    store = es.EvalSet(tmp_path, "noscore")
    store.append(es.EvalRecord.for_batch("base", rng.standard_normal((8, 3)), "p", 0))
    rows = er.evaluate_labels(store.by_label(), "base")
    paths = er.write_report(rows, tmp_path / "out", "r", {})
    assert set(paths) == {"json", "csv"}
    assert "reward" in er.why_not_plottable(rows, "vendi", "reward_mean")
    with pytest.raises(es.EvalSetError, match="connect a reward model"):
        er.plot_tradeoff(rows)


@pytest.mark.parametrize(
    "points, x_higher, expected",
    [
        ([(1, 1), (2, 2), (3, 0)], True, [1, 2]),  # (1,1) dominated by (2,2)
        ([(1, 1), (2, 2), (3, 0)], False, [0, 1]),  # lower x better: (3, 0) is worse on both
        ([(1, 1), (1, 1)], True, [0, 1]),  # ties do not dominate
    ],
)
def test_pareto_front(points, x_higher, expected):
    assert er.pareto_front(points, x_higher) == expected


def test_family_of_label():
    assert er.family_of("aig:p=2") == "aig" and er.family_of("base") == "base"


NASTY_LABELS = ["$x$", "cost $5", "a_b^c", r"\frac{1}{2}", "_hidden", "_nolegend_:1", "50% {braces}", "tab\there",
                "line\nbreak", "../../etc/passwd", "CON", "\u00e9t\u00e9 \u2603", "x" * 300]


def test_any_label_text_reaches_plot_and_tables_literally(tmp_path):
    """Mathtext, '_'-prefixed legend names, paths and long labels: the report draws and writes them as text."""
    from matplotlib.text import Text

    rng = np.random.default_rng(1)
    store = es.EvalSet(tmp_path, "nasty")
    for label in ["base", *NASTY_LABELS]:
        store.append(es.EvalRecord.for_batch(label, rng.standard_normal((8, 4)), "p", 0, scores=rng.random(8)))
    rows = er.evaluate_labels(store.by_label(), "base", k=2)
    drawn: list[str] = []
    real_draw = Text.draw

    def record_draw(self, renderer):
        if self.get_text():
            assert self.get_parse_math() is False or "$" not in self.get_text()
            drawn.append(self.get_text())
        return real_draw(self, renderer)

    Text.draw = record_draw
    try:
        paths = er.write_report(rows, store.path, er.report_stem("$x$"), {"title": "set $x$ _y"}, x_metric="scd")
    finally:
        Text.draw = real_draw
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for label in NASTY_LABELS:
        assert label in drawn  # point annotation, literally
    assert "_hidden" in drawn and "_nolegend_" in drawn  # legend keeps '_'-prefixed families
    assert "set $x$ _y" in drawn
    with open(paths["csv"], newline="") as handle:
        assert [r["label"] for r in csv.DictReader(handle)] == ["base", *NASTY_LABELS]
    assert [r["label"] for r in json.loads(paths["json"].read_text())["rows"]] == ["base", *NASTY_LABELS]


@pytest.mark.parametrize("label", ["base", "aig:p=2", "lora/0.5", "../x", "$x$", "a b", "\u00e9", "x" * 300, "CON"])
def test_report_stem_is_one_safe_file_name(label, tmp_path):
    stem = er.report_stem(label)
    assert stem.startswith("report_") and len(stem) <= er.MAX_STEM_CHARS
    assert set(stem) <= er.SAFE_FILE_CHARS | {"%", "~"}
    (tmp_path / f"{stem}.json").write_text("{}")  # a valid file name on this system
    assert er.report_stem("base") == "report_base"


def test_report_stems_of_distinct_labels_differ():
    labels = ["aig:p=2", "aig_p=2", "aig/p=2", "aig%3Ap=2", "x" * 300, "x" * 299 + "y"]
    assert len({er.report_stem(label) for label in labels}) == len(labels)

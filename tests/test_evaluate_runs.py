"""`comfy-aig evaluate` sweeps on the tiny SD1.5: resume after a kill, 2-process gloo, one store with ComfyUI runs.

Every run uses one torch thread (the torchrun workers too), so records are compared bit for bit.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aig_testkit.eval_fixtures import (
    assert_same_records,
    assert_same_rows,
    build_eval_world,
    record_view,
    report_rows,
    sweep_data,
    to_toml,
)
from comfy_aig.core.evalreport import evaluate_labels
from comfy_aig.core.evalset import EvalRecord, EvalSet, EvalSetError
from comfy_aig.training import evaluate as ev
from comfy_aig.training.evaluate_config import eval_config_from_dict

LABELS = ["base", "lora:1", "lora:0.5", "aig:p=2", "kl:small"]


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_sweep(data: dict) -> dict:
    with one_thread():
        return ev.evaluate(eval_config_from_dict(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_eval_world(tmp_path_factory.mktemp("eval_world"))


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """An uninterrupted 1-process sweep: (its config data, its set folder, its summary)."""
    data = sweep_data(world, tmp_path_factory.mktemp("eval_ref"))
    summary = run_sweep(data)
    return data, Path(summary["set"]), summary


def _refuse_models(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded although every item was done")

    monkeypatch.setattr(ev, "load_sweep_model", refuse)


@pytest.mark.slow
def test_sweep_writes_one_record_per_item_and_the_report(reference):
    data, folder, summary = reference
    records = record_view(folder)
    assert len(records) == 15 and summary["images"] == 30 and summary["images_per_s"] > 0
    label, prompts, seeds, batch, source, features, scores = records[sorted(records)[0]]
    assert seeds == [7, 7] and batch == [0, 1] and prompts[0] == prompts[1] and source == "pixels:4"
    assert features.shape == (2, 48) and scores.shape == (2,)
    rows = report_rows(folder)
    assert list(rows) == LABELS and all(rows[x]["n"] == 6 and rows[x]["n_paired"] == 6 for x in LABELS)
    assert rows["base"]["scd"] == 0.0 and rows["lora:1"]["scd"] > 0 and rows["lora:1"]["reward_mean"] is not None
    by_label = {r[0]: r[5] for r in records.values()}
    assert not np.array_equal(by_label["base"], by_label["lora:1"])  # the LoRA changes the images
    assert {"json", "csv", "png"} <= set(summary["report"])


@pytest.mark.slow
def test_report_equals_an_offline_recompute_from_the_records(reference):
    data, folder, _ = reference
    offline = {row["label"]: row for row in evaluate_labels(EvalSet(folder.parent, folder.name).by_label(), "base",
                                                            k=data["metrics"]["k"])}
    rows = report_rows(folder)
    assert_same_rows({x: offline[x] for x in rows}, rows, rel=0)
    with open(folder / "report_base.csv", newline="") as handle:
        table = {row["label"]: row for row in csv.DictReader(io.StringIO(handle.read()))}
    assert float(table["aig:p=2"]["scd"]) == pytest.approx(offline["aig:p=2"]["scd"], rel=1e-12)


@pytest.mark.slow
def test_kill_mid_sweep_then_rerun_equals_an_uninterrupted_run(world, reference, tmp_path, monkeypatch):
    _, ref_folder, _ = reference
    data = sweep_data(world, tmp_path)
    real_write, calls = ev._write_record, []

    def dies_after_four(path, record):
        if len(calls) == 4:
            raise RuntimeError("killed after 4 records")
        calls.append(path.name)
        real_write(path, record)

    monkeypatch.setattr(ev, "_write_record", dies_after_four)
    with pytest.raises(RuntimeError, match="killed after 4 records"):
        run_sweep(data)
    folder = tmp_path / "sweep"
    assert sorted(record_view(folder)) == sorted(calls) and not list(folder.glob(".*.tmp"))
    monkeypatch.setattr(ev, "_write_record", real_write)
    summary = run_sweep(data)
    assert summary["images"] == 2 * (15 - 3)  # base is done; lora:1 has one of its 2-item chunk: sampled again
    assert_same_records(record_view(folder), record_view(ref_folder))
    assert_same_rows(report_rows(folder), report_rows(ref_folder))
    _refuse_models(monkeypatch)  # everything done: the rerun only rebuilds the report
    (folder / "report_base.json").unlink()
    assert run_sweep(data)["images"] == 0
    assert_same_rows(report_rows(folder), report_rows(ref_folder))


@pytest.mark.slow
def test_two_process_gloo_resume_equals_one_process(world, reference, tmp_path):
    _, ref_folder, _ = reference
    folder = tmp_path / "sweep"
    folder.mkdir()
    for name in sorted(record_view(ref_folder))[:3]:  # what a killed run had finished
        shutil.copy(ref_folder / name, folder / name)
    config = tmp_path / "sweep.toml"
    config.write_text(to_toml(sweep_data(world, tmp_path)), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "comfy_aig.training", "evaluate", "--config", str(config)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluate rank 0/2" in done.stderr and "evaluate rank 1/2" in done.stderr
    assert_same_records(record_view(folder), record_view(ref_folder))
    assert_same_rows(report_rows(folder), report_rows(ref_folder))


@pytest.mark.slow
def test_a_comfyui_record_in_the_same_set_joins_the_report(world, reference, tmp_path, monkeypatch):
    data, ref_folder, _ = reference
    shutil.copytree(ref_folder, tmp_path / "sweep")
    store = EvalSet(tmp_path, "sweep")
    rng = np.random.default_rng(0)
    scores = np.array([0.1, 0.2, 0.6], dtype=np.float32)
    store.append(EvalRecord.for_batch("aig:p=4", rng.random((3, 48)), "a dog", 7, scores=scores,
                                      feature_source="pixels:4"))  # as AIGEvalCollect.execute stores a run
    _refuse_models(monkeypatch)
    run_sweep(sweep_data(world, tmp_path))
    rows = report_rows(tmp_path / "sweep")
    assert list(rows) == [*LABELS, "aig:p=4"]
    assert rows["aig:p=4"]["n"] == 3 and rows["aig:p=4"]["reward_mean"] == pytest.approx(0.3)
    assert rows["aig:p=4"]["scd"] is not None
    assert rows["aig:p=4"]["n_paired"] == 2  # ("a dog", 7, 0..1) pair with the sweep's base rows; row 2 has none
    assert_same_rows({x: rows[x] for x in LABELS}, report_rows(ref_folder))


@pytest.mark.slow
def test_records_of_other_settings_or_features_stop_the_sweep_before_sampling(world, reference, tmp_path,
                                                                             monkeypatch):
    _, ref_folder, _ = reference
    shutil.copytree(ref_folder, tmp_path / "sweep")
    _refuse_models(monkeypatch)
    with pytest.raises(EvalSetError, match="made with other settings.*Use a new output.set"):
        run_sweep(sweep_data(world, tmp_path, sampling={"steps": 3}))
    other = tmp_path / "other"
    EvalSet(other, "sweep").append(EvalRecord.for_batch("base", np.zeros((2, 16)), "a dog", 0,
                                                        feature_source="reward:pickscore:16"))
    with pytest.raises(EvalSetError, match="holds features from 'reward:pickscore:16' but this sweep makes "
                                           "'pixels:4'"):
        run_sweep(sweep_data(world, other))

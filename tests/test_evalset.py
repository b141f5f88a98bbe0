"""Evaluation-set store: round trips, grouping, atomicity under crashes mid-write, bad inputs."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from comfy_aig.core import evalset as es


def record(label, seed, rows=3, dim=4, scores=True, source="clip"):
    rng = np.random.default_rng(seed)
    return es.EvalRecord.for_batch(label, rng.standard_normal((rows, dim)), f"prompt {seed}", seed,
                                   scores=rng.random(rows) if scores else None, feature_source=source)


def test_round_trip_keeps_every_field(tmp_path):
    store = es.EvalSet(tmp_path, "demo")
    original = record("aig:p=2", 7)
    path = store.append(original)
    (loaded,) = store.records()
    assert path.name == loaded.name and path.parent == tmp_path / "demo"
    np.testing.assert_array_equal(loaded.features, original.features)
    np.testing.assert_array_equal(loaded.scores, original.scores)
    assert loaded.keys() == [("prompt 7", 7, 0), ("prompt 7", 7, 1), ("prompt 7", 7, 2)]
    assert (loaded.label, loaded.feature_source) == ("aig:p=2", "clip")


def test_by_label_groups_in_collection_order_and_counts_missing_scores(tmp_path):
    store = es.EvalSet(tmp_path, "demo")
    for seed in range(3):
        store.append(record("base", seed))
        store.append(record("tuned", seed, scores=seed != 1))
    groups = store.by_label()
    assert list(groups) == ["base", "tuned"]
    assert groups["base"].features.shape == (9, 4) and groups["base"].runs == 3
    assert groups["tuned"].scores.shape == (6,) and groups["tuned"].missing_scores == 3
    assert [k[1] for k in groups["base"].keys] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(store.fingerprint()) == 6


def test_failed_write_keeps_completed_runs_and_leaves_no_partial_file(tmp_path, monkeypatch):
    store = es.EvalSet(tmp_path, "demo")
    store.append(record("base", 0))
    store.append(record("base", 1))

    def crash(*_args, **_kwargs):
        raise OSError("simulated power loss before the rename")

    monkeypatch.setattr(es.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.append(record("base", 2))
    monkeypatch.undo()
    assert [r.seeds[0] for r in store.records()] == [0, 1]
    assert sorted(p.name for p in store.path.iterdir() if p.name.startswith(".")) == []
    store.append(record("base", 3))  # collection resumes after the failure
    assert [r.seeds[0] for r in store.records()] == [0, 1, 3]


def test_process_killed_mid_write_keeps_every_completed_run(tmp_path):
    """A child process writes 3 runs and is killed (os._exit) half-way through writing the 4th."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        from comfy_aig.core import evalset as es
        store = es.EvalSet({str(tmp_path)!r}, "crash")
        for seed in range(3):
            store.append(es.EvalRecord.for_batch("base", np.ones((2, 3)) * seed, "p", seed))
        real_write = open
        def dying_open(path, mode="r", *a, **k):
            handle = real_write(path, mode, *a, **k)
            if "w" in mode:
                handle.write(b"partial safetensors header")
                handle.flush()
                os._exit(9)
            return handle
        es.open = dying_open
        store.append(es.EvalRecord.for_batch("base", np.ones((2, 3)) * 3, "p", 3))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    folder = tmp_path / "crash"
    assert len([p for p in folder.iterdir() if p.name.endswith(".tmp")]) == 1  # the interrupted write ...
    store = es.EvalSet(tmp_path, "crash")
    assert [p for p in folder.iterdir() if p.name.endswith(".tmp")] == []  # ... is removed on the next open
    assert [r.seeds[0] for r in store.records()] == [0, 1, 2]  # and never read as a run
    store.append(es.EvalRecord.for_batch("base", np.ones((2, 3)) * 4, "p", 4))  # restart continues
    assert [r.seeds[0] for r in store.records()] == [0, 1, 2, 4]


def test_back_to_back_appends_get_distinct_names(tmp_path):
    store = es.EvalSet(tmp_path, "fast")
    paths = [store.append(record("base", 0)) for _ in range(20)]
    assert len({p.name for p in paths}) == 20 and len(store.records()) == 20


def test_corrupt_record_is_reported_with_its_path(tmp_path):
    store = es.EvalSet(tmp_path, "demo")
    store.append(record("base", 0))
    (store.path / "run-00000000000000000001-deadbeef.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(es.EvalSetError, match="unreadable"):
        store.records()


def test_mixed_feature_models_are_refused(tmp_path):
    store = es.EvalSet(tmp_path, "demo")
    store.append(record("base", 0, dim=4))
    store.append(record("tuned", 0, dim=5))
    with pytest.raises(es.EvalSetError, match="mixes feature models"):
        store.by_label()


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 200, "a..b", "eval\n", "eval\r\n", " eval",
                                  "eval ", "ev\x00al", "\u00e9val"])
def test_unsafe_set_names_are_refused(tmp_path, name):
    with pytest.raises(es.EvalSetError, match="plain folder name"):
        es.EvalSet(tmp_path, name)


def test_temp_files_of_live_writers_are_kept(tmp_path):
    """Only writers that are gone lose their temp files: this process, a live process, a recent other host."""
    folder = tmp_path / "live"
    folder.mkdir()
    host = es._host()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [folder / f".run-1.safetensors.{host}.{os.getpid()}.0123abcd.tmp",
                folder / f".run-2.safetensors.{host}.{live.pid}.0123abcd.tmp",
                folder / ".run-3.safetensors.otherhost.1.0123abcd.tmp"]
        old_other_host = folder / ".run-4.safetensors.otherhost.1.0123abcd.tmp"
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        gone = folder / f".run-5.safetensors.{host}.{int(dead.stdout)}.0123abcd.tmp"
        for path in (*keep, old_other_host, gone):
            path.write_bytes(b"partial")
        stale = time.time() - es.STALE_TEMP_SECONDS - 60
        os.utime(old_other_host, (stale, stale))
        es.EvalSet(tmp_path, "live")
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in keep)
    finally:
        live.kill()
        live.wait()


def test_bad_records_are_refused():
    with pytest.raises(es.EvalSetError, match="NaN"):
        es.EvalRecord.for_batch("base", np.full((2, 3), np.nan), "p", 0)
    with pytest.raises(es.EvalSetError, match="2 feature rows but 3 scores"):
        es.EvalRecord.for_batch("base", np.ones((2, 3)), "p", 0, scores=np.ones(3))
    with pytest.raises(es.EvalSetError, match="label is empty"):
        es.EvalRecord.for_batch(" ", np.ones((2, 3)), "p", 0)


def test_atomic_write_replaces_existing_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    es.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["report.json"]


def test_prompt_lists_txt_and_partiprompts_tsv(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# my prompts\na red circle\n\n  a blue square  \n", encoding="utf-8")
    assert es.read_prompt_list(txt) == ["a red circle", "a blue square"]
    tsv = tmp_path / "parti.tsv"
    tsv.write_text("Prompt\tCategory\nbond\tAbstract\nan owl\tAnimals\n", encoding="utf-8")
    prompts = es.read_prompt_list(tsv)
    assert prompts == ["bond", "an owl"]
    assert es.prompt_at(prompts, 0) == ("bond", 0, 0) and es.prompt_at(prompts, 3) == ("an owl", 1, 1)


def test_vendored_partiprompts_file_parses():
    from pathlib import Path

    parti = Path(__file__).resolve().parent / "data" / "PartiPrompts.tsv"  # vendored, Apache-2.0
    prompts = es.read_prompt_list(parti)
    assert len(prompts) > 1600 and prompts[0] == "bond"


def test_bad_prompt_lists_are_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(es.EvalSetError, match="empty"):
        es.read_prompt_list(tmp_path / "empty.txt")
    (tmp_path / "noheader.tsv").write_text("a\tb\n")
    with pytest.raises(es.EvalSetError, match="'Prompt' column"):
        es.read_prompt_list(tmp_path / "noheader.tsv")
    with pytest.raises(es.EvalSetError, match=".txt"):
        es.read_prompt_list(tmp_path / "x.json")
    with pytest.raises(es.EvalSetError, match=">= 0"):
        es.prompt_at(["a"], -1)


def test_tsv_rows_and_prompts_stay_aligned():
    """One TSV reader for prompts and their categories: rows without a prompt are dropped from both."""
    from comfy_aig.core.evalset import parse_prompt_list, tsv_prompt_rows

    text = "Category\tPrompt\tNote\nAnimals\t a cat \tx\nPeople\t\nArt\ta mural\n\nShort\n"
    rows = tsv_prompt_rows(text)
    assert [r["prompt"] for r in rows] == parse_prompt_list(text, tsv=True) == ["a cat", "a mural"]
    assert [r.get("category", "") for r in rows] == ["Animals", "Art"]
    assert "note" not in rows[1]  # a short row has only the cells it holds

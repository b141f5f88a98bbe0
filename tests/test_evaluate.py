"""`comfy-aig evaluate` without sampling: config, labels, record keys, chunks, the rank split, noise, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from aig_testkit.eval_fixtures import PARTI_TSV, sweep_data
from comfy_aig.cli import main
from comfy_aig.training import evaluate as ev
from comfy_aig.training import sweep
from comfy_aig.training.config import ConfigError
from comfy_aig.training.evaluate_config import eval_config_from_dict, load_eval_config


@pytest.fixture
def files(tmp_path):
    """Stand-in files: build_plan checks existence and hashes LoRAs, it never loads them."""
    (tmp_path / "model").mkdir()
    for name in ("tuned", "kl"):
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
    (tmp_path / "parti.tsv").write_text(PARTI_TSV, encoding="utf-8")
    return {"model": tmp_path / "model", "tuned": tmp_path / "tuned.safetensors", "kl": tmp_path / "kl.safetensors",
            "prompts": tmp_path / "parti.tsv"}


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: errors must come before sampling."""
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(ev, "load_sweep_model", refuse)
    monkeypatch.setattr(ev, "build_scorer", refuse)


def plan_of(files, tmp_path, **sections):
    return sweep.build_plan(eval_config_from_dict(sweep_data(files, tmp_path / "out", **sections)))


def test_labels_follow_the_node_convention(files, tmp_path):
    plan = plan_of(files, tmp_path, methods={"lora_scales": [0.25, 0.5], "aig": [
        {"p": 2}, {"schedule": "linear", "window_start": 0.6, "window_end": 0.8},
        {"schedule": "sigmoid", "centre": 0.4}, {"schedule": "power", "p": 4, "label": "aig:late"}]})
    assert plan.labels == ["base", "lora:1", "lora:0.25", "lora:0.5", "aig:p=2", "aig:linear,window=0.6-0.8",
                           "aig:sigmoid,centre=0.4,width=0.1", "aig:late", "kl:small"]
    by_label = {m.label: m for m in plan.methods}
    assert by_label["aig:p=2"].schedule.describe() == "power(p=2)"
    assert by_label["lora:0.5"].lora_scale == 0.5 and by_label["lora:1"].lora_scale is None
    assert by_label["kl:small"].adapter == "kl0" and by_label["base"].adapter is None


def test_prompts_keep_their_file_index_under_the_category_filter(files, tmp_path):
    plan = plan_of(files, tmp_path)
    assert [(p.index, p.category) for p in plan.prompts] == [(0, "Abstract"), (2, "Animals"), (3, "Abstract")]
    assert len(plan.items) == 5 * 3  # methods x prompts x seeds
    names = [item.record_name for item in plan.items]
    assert len(set(names)) == len(names) and all(n.startswith("run-sweep-") for n in names)
    assert "-p000002-" in plan.items[1].record_name and plan.items[1].record_name.endswith("-s7.safetensors")
    again = plan_of(files, tmp_path, prompts={"limit": 0})  # more prompts: the same items keep their names
    assert set(names) <= {item.record_name for item in again.items}


def test_method_keys_change_with_settings_that_change_records(files, tmp_path):
    keys = plan_of(files, tmp_path).method_keys
    steps = plan_of(files, tmp_path, sampling={"steps": 3}).method_keys
    assert all(keys[label] != steps[label] for label in keys)
    files["tuned"].write_bytes(b"retrained")
    retrained = plan_of(files, tmp_path).method_keys
    assert retrained["lora:1"] != keys["lora:1"] and retrained["base"] == keys["base"]
    batch = plan_of(files, tmp_path, sampling={"batch_size": 1}).method_keys  # batching changes no record
    assert batch == retrained


def test_chunks_stay_within_one_method_and_the_batch(files, tmp_path):
    plan = plan_of(files, tmp_path, sampling={"batch_size": 4})  # 2 images per item -> 2 items per chunk
    assert sorted(len(c) for c in plan.chunks) == [1] * 5 + [2] * 5
    assert all(len({item.method.label for item in c}) == 1 for c in plan.chunks)
    assert [c[0].method.label for c in plan.chunks[:5]] == plan.labels  # interleaved: methods advance together
    assert sum(len(c) for c in plan.chunks) == len(plan.items)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_split_covers_every_pending_chunk_once(files, tmp_path, world):
    plan = plan_of(files, tmp_path)
    done = {plan.items[0].record_name, plan.items[4].record_name}
    pending = sweep.pending_chunks(plan, done)
    shares = [sweep.assign(pending, rank, world) for rank in range(world)]
    flat = [id(c) for share in shares for c in share]
    assert sorted(flat) == sorted(id(c) for c in pending)
    assert shares == [sweep.assign(pending, rank, world) for rank in range(world)]  # deterministic
    costs = [sum(item.method.cost for c in share for item in c) for share in shares]
    assert max(costs) - min(costs) <= 4  # a chunk costs at most 2 items x 2 branches


def test_noise_depends_on_seed_prompt_and_image_only(files, tmp_path):
    plan = plan_of(files, tmp_path)
    base_items = [item for item in plan.items if item.method.label == "base"]
    aig_items = [item for item in plan.items if item.method.label == "aig:p=2"]
    together = ev.chunk_noise(base_items, 2, (4, 2, 2))  # [6, 4, 2, 2]
    alone = ev.chunk_noise(aig_items[1:2], 2, (4, 2, 2))  # another method, another batch
    torch.testing.assert_close(together[2:4], alone, rtol=0, atol=0)
    assert not torch.equal(together[0], together[1])


def test_preset_parses_and_overrides_apply():
    config = load_eval_config("sweep_sd15", ["prompts.limit=20", "sampling.steps=30"])
    assert config.prompts.limit == 20 and config.sampling.steps == 30 and len(config.methods.aig) == 6
    assert config.model.kind == "sd15" and config.metrics.features == "inception"


@pytest.mark.parametrize("sections, message", [
    ({"sampling": {"stpes": 2}}, r"unknown key\(s\) \['stpes'\] in \[sampling\]; valid keys: steps"),
    ({"extra": {"a": 1}}, r"unknown config section"),
    ({"model": {"path": "/nonexistent/model.safetensors"}}, r"model.path = '/nonexistent/model.safetensors' does not"),
    ({"lora": {"tuned": ""}}, r"lora.tuned is empty"),
    ({"prompts": {"categories": ["Vehicles"]}}, r"no prompt of parti.tsv has a category in \['Vehicles'\]; its "
                                                r"categories are \['Abstract', 'Animals', 'Outdoor Scenes'\]"),
    ({"methods": {"aig": [{"schedule": "linear", "p": 2}]}}, r"\['p'\] are not parameters of schedule 'linear'"),
    ({"methods": {"aig": [{"schedule": "power", "p": -1}]}}, r"methods.aig\[0\].*out of range"),
    ({"methods": {"lora_scales": [1]}}, r"label\(s\) \['lora:1'\] twice"),
    ({"metrics": {"features": "inception"}}, r"metrics.features_path is empty"),
    ({"output": {"set": "../escape"}}, r"output.set: evaluation set name '../escape' is not a plain folder name"),
])
def test_bad_configs_fail_before_any_model_loads(files, tmp_path, no_model, sections, message):
    with pytest.raises(ConfigError, match=message):
        ev.evaluate(eval_config_from_dict(sweep_data(files, tmp_path / "out", **sections)))


def test_prompt_file_without_prompts_names_the_file(files, tmp_path, no_model):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"prompts.file = '.*empty.txt': the prompt list is empty"):
        ev.evaluate(eval_config_from_dict(sweep_data(files, tmp_path / "out", prompts={"file": str(empty),
                                                                                         "categories": []})))
    plain = tmp_path / "plain.txt"
    plain.write_text("a dog\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="needs a .tsv prompt file with a 'Category' column"):
        ev.evaluate(eval_config_from_dict(sweep_data(files, tmp_path / "out", prompts={"file": str(plain)})))


def test_cli_reports_errors_and_describes_the_plan(files, tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    from aig_testkit.eval_fixtures import to_toml

    config.write_text(to_toml(sweep_data(files, tmp_path / "out")), encoding="utf-8")
    assert main(["evaluate", "--config", str(config), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["labels"][0] == "base" and plan["items"] == 15 and plan["items_left"] == 15 and plan["images"] == 30
    assert main(["evaluate", "--config", str(config), "--set", "model.path=/no/such/model"]) == 2
    assert "model.path = '/no/such/model' does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--list-keys"]) == 0
    assert "images_per_prompt" in capsys.readouterr().out


def _scorer(tmp_path, **metrics):
    return ev.build_scorer(eval_config_from_dict({"metrics": metrics}), torch.device("cpu"))


@pytest.mark.slow
def test_scorer_names_its_features_as_the_image_features_node(tmp_path):
    from aig_testkit.reward_fixtures import TINY_PROJECTION, build_pickscore_dir

    images = torch.rand(2, 3, 16, 16)
    pixels = _scorer(tmp_path, features="pixels", pixel_size=4)
    assert pixels.source == "pixels:4" and pixels.features(images).shape == (2, 48) and pixels.reward is None
    clip = build_pickscore_dir(tmp_path / "PickScore_v1")
    scorer = _scorer(tmp_path, features="reward", features_path=str(clip), reward=[{"source": str(clip)}])
    assert scorer.source == f"reward:pickscore:{TINY_PROJECTION}"
    assert scorer.features(images).shape == (2, TINY_PROJECTION)
    assert scorer.reward.score(images, ["a dog", "a cat"]).shape == (2,)


@pytest.mark.slow
def test_scorer_reads_fid_inception_weights(tmp_path):
    from safetensors.torch import save_file

    from comfy_aig.core.features import build_fid_inception

    weights = tmp_path / "pt_inception-2015-12-05.safetensors"
    save_file({k: v.contiguous() for k, v in build_fid_inception().state_dict().items()}, str(weights))
    scorer = _scorer(tmp_path, features="inception", features_path=str(weights))
    assert scorer.source == "inception:pool3:2048"
    assert scorer.features(torch.rand(1, 3, 16, 16)).shape == (1, 2048)


def test_scan_finds_finished_items_and_records_of_dropped_prompts(files, tmp_path):
    import numpy as np

    from comfy_aig.core.evalset import EvalRecord, EvalSet, atomic_write_bytes

    plan = plan_of(files, tmp_path)
    store = EvalSet(tmp_path / "out", "sweep")
    record = EvalRecord.for_batch("base", np.zeros((2, 48)), "a red circle", 7, feature_source="pixels:4")
    dropped = sweep.record_name(plan.method_keys["base"], sweep.Prompt(1, "a blue square on grass"), 7)
    for name in (plan.items[0].record_name, dropped):
        atomic_write_bytes(store.path / name, record.to_bytes())
    state = sweep.scan_store(plan, store)
    assert state.done == {plan.items[0].record_name} and state.extra == 1
    assert state.feature_source == "pixels:4" and state.error == ""
    no_base = plan_of(files, tmp_path, methods={"base": False}, output={"dir": str(tmp_path / "empty")})
    assert "metrics.reference = 'base' is neither a label of this sweep" in sweep.scan_store(
        no_base, EvalSet(tmp_path / "empty", "sweep")).error

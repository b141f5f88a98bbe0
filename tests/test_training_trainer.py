"""DRaFT trainer (training/trainer.py): resume equivalence, crash-safe checkpoints, logs, sample grid."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from aig_testkit.diffusers_fixtures import build_tiny_sd15
from comfy_aig.training import checkpointing
from comfy_aig.training.checkpointing import latest_checkpoint, list_checkpoints, save_checkpoint
from comfy_aig.training.config import config_from_dict
from comfy_aig.training.lora_export import read_kohya
from comfy_aig.training.trainer import train

PROMPTS = "# toy prompts\na red circle\n\na blue square\ngreen triangle\nyellow star\n"


@pytest.fixture(scope="module")
def tiny_sd15_dir(tmp_path_factory):
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny_sd15_trainer"))[0]


def make_config(tmp_path, model_dir, out="run", **sections):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    data = {
        "model": {"path": str(model_dir), "resolution": 16},
        "lora": {"rank": 2, "alpha": 2.0},
        "draft": {"steps": 2, "guidance_scale": 2.0, "k": 1, "kl_weight": 0.1},
        "reward": {"terms": [{"source": "builtin:redness"}]},
        "optim": {"lr": 1e-2, "warmup_steps": 1, "schedule": "cosine"},
        "train": {"max_steps": 3, "batch_size": 2, "prompts_file": str(prompts), "device": "cpu"},
        "output": {"dir": str(tmp_path / out), "checkpoint_every": 1, "sample_every": 0},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, tiny_sd15_dir):
    full = make_config(tmp_path, tiny_sd15_dir, "full")
    train(full, resume="none")
    first = make_config(tmp_path, tiny_sd15_dir, "resumed")
    train(first, resume="none", stop_after=2)
    assert not (tmp_path / "resumed" / "lora_final.safetensors").exists()
    assert [p.name for p in list_checkpoints(first.output.dir)] == ["step-00000001", "step-00000002"]
    train(first, resume="auto")
    a = load_file(str(latest_checkpoint(full.output.dir) / "lora.safetensors"))
    b = load_file(str(latest_checkpoint(first.output.dir) / "lora.safetensors"))
    assert set(a) == set(b) and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows_a = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2, 3]
    assert [r["reward_mean"] for r in rows_a] == [r["reward_mean"] for r in rows_b]
    assert rows_a[0]["kl"] == 0.0 and rows_a[-1]["kl"] > 0
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # training moved B off 0


def test_killed_during_save_keeps_previous_checkpoint(tmp_path, tiny_sd15_dir, monkeypatch):
    config = make_config(tmp_path, tiny_sd15_dir, train={"max_steps": 1})
    train(config, resume="none")
    good = latest_checkpoint(config.output.dir)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    real_save = torch.save

    def crash(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if str(path).endswith("scheduler.pt"):
            raise KeyboardInterrupt("simulated kill during save")

    monkeypatch.setattr(checkpointing.torch, "save", crash)
    unet = torch.nn.Linear(2, 2)
    unet.lora_A = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(unet.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(config.output.dir, 2, unet, optimizer, scheduler, {})
    assert latest_checkpoint(config.output.dir) == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert list((good.parent).glob(".tmp-*"))  # the partial write sits in a hidden temp folder
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    save_checkpoint(config.output.dir, 2, unet, optimizer, scheduler, {})
    assert not list((good.parent).glob(".tmp-*")) and latest_checkpoint(config.output.dir).name == "step-00000002"


def test_logs_samples_and_exports(tmp_path, tiny_sd15_dir):
    config = make_config(tmp_path, tiny_sd15_dir, train={"max_steps": 2},
                         output={"sample_every": 2, "sample_prompts": 3, "checkpoint_every": 0})
    metrics = train(config, resume="none")
    out = tmp_path / "run"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for key in ("reward_mean", "reward_std", "kl", "grad_norm", "lr", "s_per_step", "nfe_per_image"):
        assert key in rows[0]
    for key in ("sample/reward_mean", "sample/scd_vs_base", "sample/vendi", "sample/base_vendi"):
        assert key in rows[1] and key in metrics
    assert (out / "samples" / "base.png").is_file() and (out / "samples" / "step-00000002.png").is_file()
    (ckpt,) = list_checkpoints(out)  # saved at the last step only
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 2 and state["config"]["lora"]["rank"] == 2
    modules, meta = read_kohya(out / "lora_final.safetensors")
    assert modules and all(m.rank == 2 and m.alpha == 2.0 for m in modules.values())
    assert json.loads(meta["ss_training_config"])["draft"]["kl_weight"] == 0.1
    assert read_kohya(ckpt / "lora_kohya.safetensors")[0].keys() == modules.keys()


def test_bad_prompts_file(tmp_path, tiny_sd15_dir):
    config = make_config(tmp_path, tiny_sd15_dir)
    (tmp_path / "prompts.txt").write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        train(config, resume="none")


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from comfy_aig.training.monitor import MetricsLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ValueError, match="pip install tensorboard"):
        MetricsLogger(tmp_path, tensorboard=True)
    logger = MetricsLogger(tmp_path)
    logger.log(1, {"reward_mean": 0.5})
    logger.log(2, {"reward_mean": 0.6})
    logger.truncate_after(1)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def test_injected_pixel_model_and_plain_callable_reward(tmp_path):
    """The demo path: a ready DiffusionModel and a bare reward function, with the sample grid on."""
    from aig_testkit.diffusers_fixtures import lora_parameters, redness, tiny_pixel_model

    model = tiny_pixel_model("v_prediction")
    for p in lora_parameters(model.unet):
        p.requires_grad_(True)
    config = make_config(tmp_path, "unused", train={"max_steps": 2},
                         output={"sample_every": 2, "sample_prompts": 2, "checkpoint_every": 0})
    metrics = train(config, resume="none", model=model, reward=redness, base_kind="pixel-toy")
    assert "sample/vendi" in metrics and metrics["grad_norm"] > 0
    assert read_kohya(tmp_path / "run" / "lora_final.safetensors")[1]["ss_base_model_version"] == "pixel-toy"


KILL_SCRIPT = """
import sys, time, torch
from comfy_aig.training import checkpointing
out = sys.argv[1]
net = torch.nn.Module()
net.lora_A = torch.nn.Linear(3, 2)
opt = torch.optim.AdamW(net.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
checkpointing.save_checkpoint(out, 1, net, opt, sched, {"run": 1})
real = torch.save
def slow(obj, path, *a, **k):
    real(obj, path, *a, **k)
    print("SAVING", flush=True)
    time.sleep(600)
checkpointing.torch.save = slow
with torch.no_grad():
    net.lora_A.weight += 1
checkpointing.save_checkpoint(out, 2, net, opt, sched, {"run": 2})
"""


@pytest.mark.slow
def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    """A real SIGKILL in the middle of writing checkpoint 2 leaves checkpoint 1 complete and selected."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "SAVING"
    finally:
        proc.kill()
        proc.wait(timeout=60)
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step-00000001"
    assert json.loads((latest / "state.json").read_text()) == {"step": 1, "config": {"run": 1}}
    assert set(load_file(str(latest / "lora.safetensors"))) == {"lora_A.weight", "lora_A.bias"}
    assert list((tmp_path / "checkpoints").glob(".tmp-step-00000002-*"))  # the interrupted write, ignored

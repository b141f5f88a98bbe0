"""2-process gloo torchrun: averaged LoRA gradients equal the single-process gradient of the global batch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aig_testkit.diffusers_fixtures import build_tiny_sd15
from comfy_aig.training.config import config_from_dict, config_to_dict
from comfy_aig.training.distributed import DistInfo


@pytest.mark.slow
def test_two_process_gloo_grads_equal_single_process(tmp_path):
    from aig_testkit.ddp_grads import lora_grads

    directory, _ = build_tiny_sd15(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\ngreen triangle\nyellow star\npurple moon\n")
    data = {
        "model": {"path": str(directory), "resolution": 16},
        "lora": {"rank": 2, "alpha": 2.0},
        "draft": {"steps": 2, "guidance_scale": 2.0, "k": 2, "kl_weight": 0.5},
        "reward": {"terms": [{"source": "builtin:redness"}]},
        "optim": {"grad_accum": 2},
        "train": {"batch_size": 1, "prompts_file": str(prompts), "device": "cpu", "seed": 3},
    }
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_to_dict(config_from_dict(data))))
    out = tmp_path / "ddp_grads.safetensors"
    worker = Path(__file__).parent / "aig_testkit" / "ddp_grads.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(config_file), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = load_file(str(out))

    single_config = config_from_dict(data)
    single_config = dataclasses.replace(single_config, train=dataclasses.replace(single_config.train, batch_size=2))
    single = lora_grads(single_config, DistInfo(), torch.device("cpu"))
    assert set(ddp) == set(single) and ddp
    assert sum(float(g.abs().sum()) for g in single.values()) > 0
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-7)

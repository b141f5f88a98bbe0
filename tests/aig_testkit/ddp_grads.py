"""torchrun worker: one DRaFT gradient accumulation under 2-process gloo; rank 0 saves the averaged LoRA grads.

Usage: torchrun --nproc_per_node=2 ddp_grads.py CONFIG_JSON OUT.safetensors
"""

from __future__ import annotations

import json
import sys

import torch
from safetensors.torch import save_file

from comfy_aig.training.config import config_from_dict
from comfy_aig.training.distributed import broadcast_parameters, init_distributed, shutdown
from comfy_aig.training.inputs import read_prompts
from comfy_aig.training.lora_params import trainable_lora_parameters
from comfy_aig.training.rewards import build_reward
from comfy_aig.training.trainer import TrainState, accumulate_gradients, load_model


def lora_grads(config, info, device) -> dict[str, torch.Tensor]:
    """Averaged LoRA grads of optimizer step 0 (same code path as the trainer)."""
    torch.manual_seed(config.train.seed)
    model, _ = load_model(config, device)
    broadcast_parameters(trainable_lora_parameters(model.unet), info)
    with torch.no_grad():  # non-zero B so every LoRA matrix gets a gradient
        for name, p in model.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    reward = build_reward(config.reward.terms, device)
    state = TrainState(config, model, reward, read_prompts(config.train.prompts_file), info=info, device=device)
    accumulate_gradients(state)
    return {n: p.grad.detach().clone() for n, p in model.unet.named_parameters() if "lora_" in n}


def main() -> int:
    config = config_from_dict(json.loads(open(sys.argv[1]).read()))
    info = init_distributed("cpu")
    grads = lora_grads(config, info, torch.device("cpu"))
    if info.rank == 0:
        save_file(grads, sys.argv[2])
    shutdown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())

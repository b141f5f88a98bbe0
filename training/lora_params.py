"""The peft LoRA parameters of a UNet: one name filter, one lookup, one fp32 upcast.

peft names every adapter tensor ``...<module>.lora_A.<adapter>.weight`` / ``lora_B`` (and ``lora_embedding_*``),
so ``"lora_" in name`` selects the adapter and nothing of the frozen base model.
"""

from __future__ import annotations

import torch

LORA_MARKER = "lora_"


def is_lora_name(name: str) -> bool:
    """True for a peft LoRA parameter or sub-module name."""
    return LORA_MARKER in name


def lora_named_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """name -> parameter for every LoRA parameter of module, in named_parameters order."""
    return {n: p for n, p in module.named_parameters() if is_lora_name(n)}


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA parameters of module, in named_parameters order."""
    return list(lora_named_parameters(module).values())


def make_trainable(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """fp32 master weights with requires_grad (the frozen base may be bf16/fp16); returns params."""
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def trainable_lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA parameters that require grad; ValueError when there are none."""
    params = [p for p in lora_parameters(module) if p.requires_grad]
    if not params:
        raise ValueError("the UNet has no trainable LoRA parameters; add an adapter first")
    return params

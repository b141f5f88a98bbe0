"""Resumable, atomic training checkpoints.

A checkpoint is a folder ``<dir>/checkpoints/step-00000100/`` holding
    lora.safetensors          peft LoRA parameters (exact names)
    lora_kohya.safetensors    the same adapter as a ComfyUI-loadable kohya LoRA
    optimizer.pt / scheduler.pt / rng.pt   torch.save state dicts (read with weights_only=True)
    state.json                step and the resolved config
It is written into a hidden temp folder next to it and renamed into place, so a run killed during a
save leaves only complete checkpoints (the temp folder is removed by the next save).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import torch

from .lora_params import lora_named_parameters

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d{8})$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    """torch (CPU + CUDA) and python RNG states (training noise comes from per-step seeded generators)."""
    state = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lora_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA parameters by their exact peft names, detached on the CPU (lora.safetensors)."""
    return {n: p.detach().cpu().contiguous() for n, p in lora_named_parameters(unet).items()}


def save_checkpoint(output_dir: str | Path, step: int, unet, optimizer, scheduler, config: dict,
                    kohya_writer=None, keep: int = 3) -> Path:
    """Write checkpoint `step` atomically (temp folder + rename) and prune to the newest `keep`."""
    from safetensors.torch import save_file

    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = _fresh_temp_dir(root, final.name)
    save_file(lora_state(unet), str(tmp / "lora.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    if kohya_writer is not None:
        kohya_writer(tmp / "lora_kohya.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "config": config}, indent=2, sort_keys=True))
    if final.exists():  # re-saving the same step: replace the old copy
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def _fresh_temp_dir(root: Path, name: str) -> Path:
    """A new hidden folder root/.tmp-<name>-<pid>; temp folders of earlier, interrupted saves are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    return tmp


def load_checkpoint(path: str | Path, unet, optimizer, scheduler, restore_rng: bool = True) -> int:
    """Restore LoRA weights, optimizer, LR scheduler and RNG from a checkpoint folder; returns its step."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no state.json)")
    _load_lora(path, unet)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if restore_rng:
        set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return int(json.loads((path / "state.json").read_text())["step"])


def _load_lora(path: Path, unet) -> None:
    """Copy lora.safetensors into the UNet's LoRA parameters; every one must be there, and only those."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "lora.safetensors"))
    missing = sorted(set(lora_named_parameters(unet)) - set(weights))
    if missing:
        raise ValueError(f"checkpoint {path} lacks LoRA weights {missing[:3]}...; was it trained with the same "
                         "lora.rank/targets?")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            if name not in params:
                raise ValueError(f"checkpoint {path} has LoRA weight {name} that this UNet lacks; check lora.targets")
            params[name].copy_(value)

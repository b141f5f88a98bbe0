"""Inputs shared by `comfy-aig train` and `comfy-aig sample`: the prompt file and the device name."""

from __future__ import annotations

from pathlib import Path

import torch


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    if not path:
        raise ValueError("train.prompts_file is empty; set it to a text file with one prompt per line")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {path} has no prompts (one per line, '#' starts a comment)")
    return prompts


def resolve_device(name: str, setting: str = "train.device", error: type[Exception] = ValueError) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is `error` naming `setting` and the fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise error(f"{setting} = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)

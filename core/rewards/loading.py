"""``load_reward_model``: read local reward files safely, detect their kind, build the scorer.

Layouts: transformers CLIP directory (config.json + weights; PickScore / CLIPScore), OpenCLIP
state dict file ``.pt``/``.pth``/``.bin``/``.safetensors`` (optionally ``{"state_dict": ...}``; HPSv2,
CLIPScore), LAION aesthetic MLP file (with a CLIP backbone: the directory it sits in, or ``backbone=``).
``.pt`` files are read with ``torch.load(weights_only=True)`` only; nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import files
from ..files import WEIGHT_SUFFIXES
from .base import DEFAULT_CHUNK_SIZE, RewardInputError, RewardModel

log = logging.getLogger(__name__)

KINDS = ("pickscore", "hpsv2", "hpsv2.1", "aesthetic", "clipscore")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")
OPEN_CLIP_DIR_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HEAD_KEY = re.compile(r"layers\.\d+\.(weight|bias)$")


@dataclass
class Layout:
    """What a path holds: backbone format and location, optional aesthetic head, detected kind and why."""

    kind: str
    backbone: str  # "hf" | "open_clip"
    backbone_path: Path
    head_path: Path | None = None
    wrapped: bool = False
    reason: str = ""


# --- safe reading ----------------------------------------------------------------------------------

def read_state_dict(file: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(tensor dict, was wrapped in {"state_dict"}): core.files.read_state_dict for reward weights."""
    return files.read_state_dict(file, "reward model weights (a state dict of tensors)")


def _keys_of(file: Path) -> tuple[list[str], bool]:
    if file.suffix.lower() in files.SAFETENSORS_SUFFIXES:
        return files.safetensors_keys(file, "reward model weights"), False
    sd, wrapped = read_state_dict(file)
    return list(sd), wrapped


def is_head_keys(keys) -> bool:
    keys = list(keys)
    return bool(keys) and all(_HEAD_KEY.match(k) for k in keys)


def is_open_clip_keys(keys) -> bool:
    keys = set(keys)
    return {"visual.conv1.weight", "token_embedding.weight", "text_projection"} <= keys


def is_hf_clip_keys(keys) -> bool:
    return any(k.startswith(("vision_model.", "text_model.")) for k in keys)


# --- detection -------------------------------------------------------------------------------------

def _hps_version(name: str) -> str:
    return "hpsv2.1" if re.search(r"v?2[._]1", name.lower()) else "hpsv2"


def _find_head(directory: Path) -> Path | None:
    backbone_files = set(HF_WEIGHT_FILES) | set(OPEN_CLIP_DIR_FILES)
    for f in sorted(directory.iterdir()):
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES and f.name not in backbone_files:
            if is_head_keys(_keys_of(f)[0]):
                return f
    return None


def _detect_dir(directory: Path) -> Layout:
    head = _find_head(directory)
    if (directory / "config.json").is_file():
        cfg = files.read_json(directory / "config.json", "a transformers CLIPModel config")
        if cfg.get("model_type") != "clip":
            raise RewardInputError(
                f"{directory}/config.json is a {cfg.get('model_type')!r} model, not a CLIP model (model_type 'clip'); "
                "reward directories must hold a transformers CLIPModel (PickScore, CLIP)."
            )
        if head is not None:
            return Layout("aesthetic", "hf", directory, head, reason=f"CLIP directory with MLP head {head.name}")
        hint = (directory.name + str(cfg.get("_name_or_path", ""))).lower()
        vision = cfg.get("vision_config", {})
        if "pickscore" in hint or (vision.get("hidden_size") == 1280 and vision.get("patch_size") == 14):
            return Layout("pickscore", "hf", directory, reason="CLIP directory named PickScore or of ViT-H/14 size")
        return Layout("clipscore", "hf", directory, reason="generic CLIP directory (pass kind='pickscore' for PickScore)")
    for name in OPEN_CLIP_DIR_FILES:
        if (directory / name).is_file():
            kind = "aesthetic" if head is not None else "clipscore"
            return Layout(kind, "open_clip", directory / name, head, reason="OpenCLIP directory")
    raise RewardInputError(
        f"directory {directory} has no config.json: a PickScore/CLIP directory needs config.json plus "
        "model.safetensors (or pytorch_model.bin); an OpenCLIP directory needs open_clip_config.json plus "
        "open_clip_model.safetensors. Point at the single .pt/.safetensors file for HPSv2."
    )


def _detect_file(file: Path, backbone: str | Path | None) -> Layout:
    keys, wrapped = _keys_of(file)
    if is_head_keys(keys):
        if backbone is None:
            raise RewardInputError(
                f"{file.name} is an aesthetic MLP head without its CLIP: put it inside the CLIP ViT-L/14 directory and "
                "load that directory, or pass backbone=<CLIP directory or OpenCLIP file>."
            )
        base = detect_layout(backbone)
        return Layout("aesthetic", base.backbone, base.backbone_path, file, base.wrapped, "aesthetic head + backbone")
    if is_open_clip_keys(keys):
        if wrapped or "hps" in file.name.lower():
            kind = _hps_version(file.name)
            return Layout(kind, "open_clip", file, wrapped=wrapped, reason="OpenCLIP {'state_dict'} / HPS file name")
        return Layout("clipscore", "open_clip", file, reason="plain OpenCLIP weights")
    if is_hf_clip_keys(keys):
        raise RewardInputError(
            f"{file.name} holds transformers CLIP weights but no config: load the directory containing it with its "
            "config.json (PickScore layout) instead of the single file."
        )
    raise RewardInputError(
        f"{file.name} is not a reward model file: keys {sorted(keys)[:5]} match no known layout (PickScore directory, "
        "HPSv2 OpenCLIP state dict, LAION aesthetic head layers.N.*)."
    )


def detect_layout(path: str | Path, backbone: str | Path | None = None) -> Layout:
    """Inspect a local path and report its layout and the reward kind it most likely is."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RewardInputError(f"reward model path {p} does not exist; give a local file or directory (nothing is downloaded).")
    return _detect_dir(p) if p.is_dir() else _detect_file(p, backbone)


# --- building --------------------------------------------------------------------------------------

def _resolve_dtype(dtype) -> torch.dtype:
    return torch.float32 if dtype is None else files.torch_dtype(dtype)


def _build_backbone(layout: Layout, model_config):
    from .backbones import build_open_clip, load_hf_clip

    if layout.backbone == "hf":
        return load_hf_clip(layout.backbone_path)
    sd, _ = read_state_dict(layout.backbone_path)
    return build_open_clip(sd, layout.backbone_path, model_config)


def _build_head(layout: Layout, backbone):
    from .models import AestheticHead

    head = AestheticHead.from_state_dict(read_state_dict(layout.head_path)[0])
    dim = backbone.model.visual_projection.out_features if layout.backbone == "hf" else backbone.model.text_projection.shape[1]
    if head.in_features != dim:
        raise RewardInputError(
            f"aesthetic head {layout.head_path.name} expects {head.in_features}-d CLIP embeddings but the backbone "
            f"gives {dim}-d; the LAION v2 head needs CLIP ViT-L/14 (768-d)."
        )
    return head


def load_reward_model(path, kind=None, device=None, dtype=None, *, backbone=None, model_config=None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE, gradient_checkpointing: bool = False) -> RewardModel:
    """Load a reward model from local files (see module doc); frozen, eval mode, on device in dtype.

    backbone: CLIP directory/file for a lone aesthetic head; model_config: open_clip model name or config
    dict for OpenCLIP weights of a non-built-in shape; gradient_checkpointing: recompute each chunk in
    backward (memory of one chunk when DRaFT backpropagates through a large batch).
    """
    from .models import AestheticReward, ClipTextReward

    if kind is not None and kind not in KINDS:
        raise RewardInputError(f"unknown reward kind {kind!r}; use one of {KINDS} or None to auto-detect.")
    layout = detect_layout(path, backbone)
    if kind is None:
        log.info("reward model %s detected as %s (%s)", path, layout.kind, layout.reason)
        kind = layout.kind
    if (kind == "aesthetic") != (layout.head_path is not None):
        raise RewardInputError(
            f"kind {kind!r} does not fit {path}: it was detected as {layout.kind} ({layout.reason}). An aesthetic model "
            "needs an MLP head file (layers.N.*) with a CLIP backbone; other kinds need a CLIP without a head."
        )
    net = _build_backbone(layout, model_config)
    model = AestheticReward(net, _build_head(layout, net), chunk_size) if kind == "aesthetic" \
        else ClipTextReward(net, kind, chunk_size)
    model.source = str(path)
    model.gradient_checkpointing = bool(gradient_checkpointing)
    model.requires_grad_(False).eval()
    return model.to(device=device or "cpu", dtype=_resolve_dtype(dtype))

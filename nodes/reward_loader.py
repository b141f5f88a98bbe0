"""AIGRewardModelLoader: a reward model from ComfyUI's ``reward_models`` folder (file or model directory).

The folder is registered when this module is imported (only inside ComfyUI, from ``comfy_entrypoint``).
The combo lists single files (HPSv2 ``.pt``, OpenCLIP ``.safetensors``) and model directories
(``PickScore_v1/``, a CLIP directory holding an aesthetic head) with a trailing ``/``.
Loaded models are kept across queue runs (one at a time) behind a ComfyUI ModelPatcher, so model
management moves them to the GPU for scoring and offloads them when memory is needed.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io

from ..core.errors import UnsafeNameError
from ..core.files import WEIGHT_SUFFIXES, torch_dtype
from ..core.rewards.base import RewardModel
from ..core.rewards.loading import KINDS, OPEN_CLIP_DIR_FILES, load_reward_model
from .combos import ListedCombo
from .folders import list_files, model_folder

log = logging.getLogger(__name__)

FOLDER = "reward_models"
DIR_MARKERS = ("config.json", *OPEN_CLIP_DIR_FILES)
REWARD_MODEL = io.Custom("AIG_REWARD_MODEL")  # a RewardHandle; loaded_model(handle) gives the RewardModel
DEVICES = ("default", "cpu")
DTYPES = ("auto", "fp32", "fp16", "bf16")


def register_reward_folder() -> None:
    """Add ``models/reward_models`` to folder_paths (keeps paths from extra_model_paths.yaml)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set(WEIGHT_SUFFIXES))
        return
    paths, exts = folder_paths.folder_names_and_paths[FOLDER]
    if default not in paths:
        paths.append(default)
    if exts:
        exts.update(WEIGHT_SUFFIXES)


register_reward_folder()


def _is_model_dir(folder: str, names: list[str]) -> bool:
    """A folder holding config.json or OpenCLIP weights is one model: listed as 'name/', its files are not."""
    return any(marker in names for marker in DIR_MARKERS)


def list_reward_models() -> list[str]:
    """Combo entries: model directories as 'name/' and weight files outside model directories (bounded)."""
    files, dirs = list_files(model_folder(FOLDER), WEIGHT_SUFFIXES, want_dir=_is_model_dir)
    return sorted({*(d + "/" for d in dirs), *files})


def resolve_reward_path(name: str) -> Path:
    """Real path of a combo entry inside models/reward_models ('name/' = a model directory, all of whose
    files must be inside too); UnsafeNameError otherwise, without a word about anything outside."""
    folder = model_folder(FOLDER)
    if not name.endswith("/"):
        return folder.locate(name, "reward model", kind="file")
    directory = folder.locate(name.rstrip("/"), "reward model directory", kind="dir")
    if not _is_model_dir(str(directory), [p.name for p in directory.iterdir()]):
        raise UnsafeNameError(f"reward model directory {name!r} holds no config.json or OpenCLIP weights; "
                              "pick a model directory from the list.")
    for entry in directory.iterdir():  # files the loader may read (weights, config, tokenizer)
        folder.locate(f"{name}{entry.name}", "reward model file", kind="any")
    return directory


class _PatcherModule(torch.nn.Module):
    """Container ModelPatcher may annotate (it sets .device and bookkeeping attributes on its module)."""

    def __init__(self, reward, device: torch.device):
        super().__init__()
        self.reward = reward
        self.device = device


class RewardHandle:
    """A loaded reward model plus the ModelPatcher through which ComfyUI places it on a device."""

    def __init__(self, model, name: str, load_device: torch.device, offload_device: torch.device):
        self.model = model
        self.name = name
        self.kind = model.kind
        self.patcher = comfy.model_patcher.ModelPatcher(
            _PatcherModule(model, offload_device), load_device=load_device, offload_device=offload_device
        )

    def ensure_loaded(self) -> None:
        """Ask model management to put the whole model on its load device (frees others if needed)."""
        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)


def loaded_model(handle: RewardHandle) -> RewardModel:
    """The RewardModel behind the loader's output (an AIG_REWARD_MODEL), on its load device."""
    handle.ensure_loaded()
    return handle.model


_CACHE: dict[tuple, RewardHandle] = {}
_LOCK = threading.Lock()


def _compute_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice != "auto":
        return torch_dtype(choice)
    if device.type == "cpu":
        return torch.float32
    if comfy.model_management.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if comfy.model_management.should_use_fp16(device) else torch.float32


def get_reward_handle(name: str, kind: str, device: str, dtype: str) -> RewardHandle:
    """Load (or reuse) a reward model; the cache holds the most recent model only."""
    path = resolve_reward_path(name)
    load_device = torch.device("cpu") if device == "cpu" else comfy.model_management.get_torch_device()
    offload_device = torch.device("cpu") if device == "cpu" else comfy.model_management.unet_offload_device()
    torch_dtype = _compute_dtype(dtype, load_device)
    key = (str(path), path.stat().st_mtime_ns, kind, str(load_device), str(torch_dtype))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        model = load_reward_model(path, kind=None if kind == "auto" else kind, device=offload_device, dtype=torch_dtype)
        handle = RewardHandle(model, name, load_device, offload_device)
        _CACHE.clear()  # release the previous model (its ModelPatcher goes with it)
        _CACHE[key] = handle
        return handle


class AIGRewardModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGRewardModelLoader",
            display_name="Load Reward Model (AIG)",
            category="AIG/rewards",
            description="Loads PickScore (CLIP directory), HPSv2/2.1 (.pt), a LAION aesthetic head (inside its CLIP "
            "directory) or any CLIP for CLIPScore from models/reward_models. Nothing is downloaded.",
            inputs=[
                ListedCombo("model_name", options=list_reward_models(),
                               tooltip="File or directory (ending in /) in models/reward_models; no neutral value."),
                ListedCombo("kind", options=["auto", *KINDS], default="auto",
                               tooltip="Reward formula; 'auto' (neutral) detects it from the files."),
                ListedCombo("device", options=list(DEVICES), default="default",
                               tooltip="'default' (neutral) lets ComfyUI place the model; 'cpu' keeps it on CPU."),
                ListedCombo("dtype", options=list(DTYPES), default="auto",
                               tooltip="Compute precision; 'auto' (neutral) is fp32 on CPU, bf16/fp16 on GPU."),
            ],
            outputs=[REWARD_MODEL.Output(display_name="reward_model")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        """model_name only, so a bad name is one message on that input (ComfyUI repeats a failure once per
        argument); ComfyUI checks the other combos against their lists (ListedCombo)."""
        try:
            resolve_reward_path(model_name)
        except UnsafeNameError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, model_name, kind="auto", device="default", dtype="auto") -> io.NodeOutput:
        handle = get_reward_handle(model_name, kind, device, dtype)
        return io.NodeOutput(handle)


REWARD_LOADER_NODES = [AIGRewardModelLoader]

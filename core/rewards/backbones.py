"""CLIP backbones behind the rewards: a transformers ``CLIPModel`` directory or OpenCLIP weights.

Both expose ``image_size``, ``encode_image(pixels) -> [b, D]`` (projected, unnormalised, float32),
``encode_text(prompts) -> [b, D]`` and ``logit_scale``. The OpenCLIP architecture is taken from an
explicit config, a JSON sidecar, or the built-in open_clip config whose shapes match the state dict.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..errors import FileLoadError, plain_text
from ..files import read_json
from .base import RewardInputError

log = logging.getLogger(__name__)

# vision/text config keys of plain OpenCLIP ViT configs (others change the architecture's keys)
_SIMPLE_VISION = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio", "ls_init_value"}
_SIMPLE_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "ls_init_value"}


class HFClipBackbone(torch.nn.Module):
    """transformers CLIPModel + tokenizer (PickScore layout)."""

    def __init__(self, model, tokenizer):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.context_length = int(model.config.text_config.max_position_embeddings)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [b, 3, S, S] -> projected image embedding [b, D] float32."""
        dtype = self.model.visual_projection.weight.dtype
        pooled = self.model.vision_model(pixel_values=pixels.to(dtype)).pooler_output
        return self.model.visual_projection(pooled).float()

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> projected text embedding [b, D] float32 (pad to the longest: causal mask, EOS pooling)."""
        tok = self.tokenizer(prompts, padding="longest", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        device = self.model.logit_scale.device
        pooled = self.model.text_model(input_ids=tok["input_ids"].to(device),
                                       attention_mask=tok["attention_mask"].to(device)).pooler_output
        return self.model.text_projection(pooled).float()


class OpenClipBackbone(torch.nn.Module):
    """open_clip CLIP + its bundled SimpleTokenizer (HPSv2 layout)."""

    def __init__(self, model, tokenizer, context_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.context_length = context_length

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [b, 3, S, S] -> projected image embedding [b, D] float32."""
        dtype = self.model.visual.conv1.weight.dtype
        return self.model.encode_image(pixels.to(dtype)).float()

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> projected text embedding [b, D] float32."""
        tokens = self.tokenizer(prompts, context_length=self.context_length)
        return self.model.encode_text(tokens.to(self.model.logit_scale.device)).float()


# --- transformers directory ------------------------------------------------------------------------

def load_hf_clip(directory: Path) -> HFClipBackbone:
    """CLIPModel from a local directory (config.json + model.safetensors / pytorch_model.bin), strict keys."""
    from safetensors import SafetensorError
    from transformers import CLIPModel

    from .tokenizer import load_directory_tokenizer

    try:
        model, info = CLIPModel.from_pretrained(str(directory), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # missing, truncated or corrupt weights
        raise FileLoadError(
            f"could not load a transformers CLIP model from {directory.name}/ ({plain_text(error, 160)}). The "
            "directory needs config.json plus model.safetensors (or pytorch_model.bin), complete and uncorrupted."
        ) from None
    _check_loading_info(info, directory)
    ctx = int(model.config.text_config.max_position_embeddings)
    return HFClipBackbone(model, load_directory_tokenizer(directory, model_max_length=ctx))


def _check_loading_info(info: dict, where) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        raise RewardInputError(
            f"weights in {where} do not match its config.json: missing keys {missing[:5]} ({len(missing)} total), "
            f"unexpected keys {unexpected[:5]} ({len(unexpected)} total), shape mismatches {mismatched[:3]}. "
            "Use the config.json that came with these weights."
        )


# --- OpenCLIP state dict ---------------------------------------------------------------------------

def _count_blocks(state_dict: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in state_dict if (m := pat.match(k))})


def open_clip_dims(state_dict: dict) -> dict:
    """Architecture numbers readable from an OpenCLIP state dict's shapes (heads are not readable)."""
    try:
        conv = state_dict["visual.conv1.weight"]  # [width, 3, patch, patch]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return {
            "embed_dim": int(state_dict["text_projection"].shape[1]),
            "vision_width": int(conv.shape[0]),
            "patch_size": int(conv.shape[-1]),
            "image_size": int(grid * conv.shape[-1]),
            "vision_layers": _count_blocks(state_dict, "visual.transformer.resblocks."),
            "text_width": int(state_dict["ln_final.weight"].shape[0]),
            "text_layers": _count_blocks(state_dict, "transformer.resblocks."),
            "context_length": int(state_dict["positional_embedding"].shape[0]),
            "vocab_size": int(state_dict["token_embedding.weight"].shape[0]),
        }
    except KeyError as error:
        raise RewardInputError(f"not an OpenCLIP ViT state dict: key {error} is missing.") from error


def _config_dims(cfg: dict) -> dict | None:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if set(v) - _SIMPLE_VISION or set(t) - _SIMPLE_TEXT or cfg.get("custom_text") or "multimodal_cfg" in cfg:
        return None
    size = v.get("image_size", 224)
    return {
        "embed_dim": cfg["embed_dim"], "vision_width": v.get("width", 768), "patch_size": v.get("patch_size", 16),
        "image_size": size[0] if isinstance(size, (list, tuple)) else size, "vision_layers": v.get("layers", 12),
        "text_width": t.get("width", 512), "text_layers": t.get("layers", 12),
        "context_length": t.get("context_length", 77), "vocab_size": t.get("vocab_size", 49408),
    }


def match_open_clip_config(state_dict: dict) -> tuple[str, dict]:
    """(name, model config) of the built-in open_clip config whose shapes match; ValueError if none does."""
    import open_clip

    dims = open_clip_dims(state_dict)
    names = [n for n in open_clip.list_models() if _config_dims(open_clip.get_model_config(n) or {}) == dims]
    if not names:
        raise RewardInputError(
            f"no built-in open_clip architecture matches this state dict {dims}; pass model_config=<open_clip "
            "model name or config dict>, or put an open_clip_config.json ({'model_cfg': ...}) next to the file."
        )
    name = min(names, key=lambda n: (len(n), n))  # plain 'ViT-H-14' over '-quickgelu' variants
    return name, open_clip.get_model_config(name)


def read_sidecar_config(file: Path) -> dict | None:
    """OpenCLIP model config from '<stem>.json' or 'open_clip_config.json' beside file ({'model_cfg': ...} or raw)."""
    for candidate in (file.with_suffix(".json"), file.parent / "open_clip_config.json"):
        if candidate.is_file():
            data = read_json(candidate, "an OpenCLIP model config")
            cfg = data.get("model_cfg", data)
            if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
                return cfg
    return None


def resolve_open_clip_config(state_dict: dict, file: Path, model_config=None) -> tuple[str, dict]:
    """Model config from model_config (name or dict), else a sidecar JSON, else the matching built-in config."""
    import open_clip

    if isinstance(model_config, str):
        cfg = open_clip.get_model_config(model_config)
        if cfg is None:
            raise RewardInputError(f"unknown open_clip model name {model_config!r}; see open_clip.list_models().")
        return model_config, cfg
    if isinstance(model_config, dict):
        return "custom", model_config
    sidecar = read_sidecar_config(file)
    if sidecar is not None:
        return f"sidecar:{file.name}", sidecar
    return match_open_clip_config(state_dict)


def build_open_clip(state_dict: dict, file: Path, model_config=None) -> OpenClipBackbone:
    """open_clip CLIP of the resolved architecture with state_dict loaded strictly."""
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer

    name, cfg = resolve_open_clip_config(state_dict, file, model_config)
    cfg = {k: v for k, v in cfg.items() if k != "custom_text"}
    model = CLIP(**cfg)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise RewardInputError(f"{file} does not fit the open_clip architecture {name!r}: {error}") from error
    if result.missing_keys or result.unexpected_keys:
        raise RewardInputError(
            f"{file} does not match the open_clip architecture {name!r}: missing keys {result.missing_keys[:5]} "
            f"({len(result.missing_keys)} total), unexpected keys {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)} total). Pass the right model_config or check the file."
        )
    log.info("built OpenCLIP architecture %s for %s", name, file)
    ctx = int(cfg["text_cfg"].get("context_length", 77))
    return OpenClipBackbone(model, SimpleTokenizer(context_length=ctx), ctx)

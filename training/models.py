"""Offline loading of SD1.x / SDXL from a single-file checkpoint or a diffusers directory, as a DiffusionModel.

Single files (original key layout, as in ComfyUI/models/checkpoints) are read with diffusers'
``from_single_file`` against a local config folder: the SD1.5 / SDXL configs shipped in
``training/model_configs/`` (or any diffusers directory passed as ``config_dir``, e.g. a tiny test model).
Tokenizers come from the diffusers directory when it has them, else from open_clip's bundled BPE
(``core/rewards/tokenizer.py``); SDXL's second tokenizer pads with "!" (id 0) like the original.

API: ``detect_kind(path)``, ``shipped_config_dir(kind)``, ``load_pipeline(path, kind="auto", config_dir=None,
dtype=torch.float32)``, ``build_diffusion_model(pipe, resolution, prediction_type=None) -> DiffusionModel``,
``add_lora(unet, rank, alpha, targets)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .lora_params import lora_parameters, make_trainable
from .sampling import Conditioning, DiffusionModel

log = logging.getLogger(__name__)

KINDS = ("sd15", "sdxl")
_SDXL_MARKERS = ("conditioner.embedders.1.", "model.diffusion_model.label_emb.0.0.weight")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


def shipped_config_dir(kind: str) -> Path:
    """training/model_configs/<kind>: the diffusers configs used for offline single-file loading."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind '{kind}'; valid kinds: {', '.join(KINDS)}")
    return Path(__file__).parent / "model_configs" / kind


def detect_kind(path: str | Path) -> str:
    """'sdxl' or 'sd15' from a single file's keys or a diffusers directory's model_index.json."""
    path = Path(path)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{path} is a directory without model_index.json; pass a diffusers pipeline "
                                    "directory or a single-file checkpoint")
        return "sdxl" if "text_encoder_2" in json.loads(index.read_text()) else "sd15"
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: only .safetensors single files are read (no pickle); convert it first")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    if any(k.startswith(m) or k == m for k in keys for m in _SDXL_MARKERS):
        return "sdxl"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd15"
    raise ValueError(f"{path}: no 'model.diffusion_model.*' keys; not an SD1.x/SDXL checkpoint in original layout")


def _tokenizers(kind: str, source: Path) -> dict:
    """Tokenizer(s) from the directory when present, else built offline from open_clip's BPE."""
    from transformers import CLIPTokenizer

    from ..core.rewards.tokenizer import build_clip_tokenizer, has_tokenizer_files

    out = {}
    names = ["tokenizer"] + (["tokenizer_2"] if kind == "sdxl" else [])
    for name in names:
        folder = source / name
        if folder.is_dir() and has_tokenizer_files(folder):
            out[name] = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
            continue
        base = build_clip_tokenizer()
        if name == "tokenizer_2":  # OpenCLIP bigG pads with "!" (id 0), not with <|endoftext|>
            base = CLIPTokenizer.from_pretrained(base.name_or_path, local_files_only=True, pad_token="!")
        out[name] = base
    return out


def load_pipeline(path: str | Path, kind: str = "auto", config_dir: str | Path | None = None,
                  dtype: torch.dtype = torch.float32):
    """A diffusers SD/SDXL pipeline with a DDIM scheduler, loaded offline from a single file or a directory."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(path)
    kind = detect_kind(path) if kind == "auto" else kind
    if kind not in KINDS:
        raise ValueError(f"unknown model kind '{kind}'; valid kinds: auto, {', '.join(KINDS)}")
    cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    extra = {} if kind == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                        "requires_safety_checker": False}
    if path.is_dir():
        toks = {k: v for k, v in _tokenizers(kind, path).items() if not (path / k).is_dir()}
        pipe = cls.from_pretrained(str(path), local_files_only=True, **toks, **extra)
    else:
        config = Path(config_dir) if config_dir is not None else shipped_config_dir(kind)
        pipe = cls.from_single_file(str(path), config=str(config), local_files_only=True,
                                    **_tokenizers(kind, config), **extra)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    for module in _frozen_modules(pipe):
        module.requires_grad_(False)
        module.eval()
    return pipe


def _frozen_modules(pipe) -> list[torch.nn.Module]:
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    return [getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None]


def add_lora(unet: torch.nn.Module, rank: int = 32, alpha: float = 32.0,
             targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"), seed: int | None = None) -> list:
    """Inject a peft LoRA adapter "default" (B = 0, so tuned == base at init); returns its trainable params."""
    from peft import LoraConfig

    if seed is not None:
        torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True))
    return make_trainable(lora_parameters(unet))


def _encode_sd15(pipe, prompts: list[str]) -> Conditioning:
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    ids = tok.input_ids.to(pipe.text_encoder.device)
    return Conditioning(pipe.text_encoder(ids)[0])  # last hidden state [B, 77, D]


def _encode_sdxl(pipe, prompts: list[str], resolution: int) -> Conditioning:
    """Penultimate hidden states of both encoders concatenated; pooled = text_encoder_2 projection."""
    states, pooled = [], None
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out[0]
    embeds = torch.cat(states, dim=-1)  # [B, 77, D1 + D2]
    size = [resolution, resolution, 0, 0, resolution, resolution]  # original size, crop (top, left), target size
    time_ids = torch.tensor([size] * len(prompts), device=embeds.device, dtype=embeds.dtype)
    return Conditioning(embeds, pooled, time_ids)


def _vae_decoder(vae):
    """latents -> images in 0..1 via the VAE (checkpointed when gradients flow, to bound memory)."""
    from torch.utils.checkpoint import checkpoint

    def decode(latents: torch.Tensor) -> torch.Tensor:
        z = latents / vae.config.scaling_factor
        z = z.to(next(vae.parameters()).dtype)
        if torch.is_grad_enabled() and z.requires_grad:
            x = checkpoint(lambda v: vae.decode(v).sample, z, use_reentrant=False)
        else:
            x = vae.decode(z).sample
        return ((x.float() + 1) / 2).clamp(0, 1)

    return decode


def build_diffusion_model(pipe, resolution: int | None = None, prediction_type: str | None = None) -> DiffusionModel:
    """Wrap a loaded pipeline as the sampler/DRaFT DiffusionModel (SDXL: pooled + size conditioning)."""
    is_xl = getattr(pipe, "text_encoder_2", None) is not None
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    resolution = resolution or pipe.unet.config.sample_size * factor
    if resolution % factor:
        raise ValueError(f"resolution {resolution} must be a multiple of the VAE factor {factor}")
    if prediction_type is not None:
        pipe.scheduler.register_to_config(prediction_type=prediction_type)
    encode = (lambda p: _encode_sdxl(pipe, p, resolution)) if is_xl else (lambda p: _encode_sd15(pipe, p))

    def encode_prompts(prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            return encode(list(prompts)).to(dtype=pipe.unet.dtype)

    latent_shape = (pipe.unet.config.in_channels, resolution // factor, resolution // factor)
    return DiffusionModel(unet=pipe.unet, scheduler=pipe.scheduler, encode_prompts=encode_prompts,
                          decode=_vae_decoder(pipe.vae), latent_shape=latent_shape)

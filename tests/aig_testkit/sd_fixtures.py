"""Tiny Stable Diffusion models in real file layouts: diffusers components, original-layout single files, kohya LoRAs.

The shallow SD1.5 checkpoint has one UNet level of 320 channels with context 768, so ComfyUI's
CheckpointLoaderSimple detects it as SD15; its VAE and CLIP-L are full size because ComfyUI builds
those from fixed configs. Nothing here is committed: files are written into a test's temp dir.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

# -- components --------------------------------------------------------------------------------

SHALLOW_SD15_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(320,), down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215,
)
CLIP_L_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    projection_dim=768,
)


def _small_init(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Deterministic small random weights (norm layers keep weight 1, bias 0) so activations stay finite."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name or "layer_norm" in name:
                continue
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module


def build_sd15_components(seed: int = 0, unet_config: dict | None = None, vae_config: dict | None = None,
                          text_config: dict | None = None):
    """(unet, vae, text_encoder) diffusers/transformers modules in eval mode with seeded weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = _small_init(UNet2DConditionModel(**(unet_config or SHALLOW_SD15_UNET)), seed)
    vae = _small_init(AutoencoderKL(**(vae_config or SD_VAE)), seed + 1)
    text_encoder = _small_init(CLIPTextModel(CLIPTextConfig(**(text_config or CLIP_L_TEXT))), seed + 2)
    return unet.eval(), vae.eval(), text_encoder.eval()


# -- diffusers -> original (LDM) key layout -------------------------------------------------------

_RESNET_TO_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                  ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _unet_prefix_map(config) -> dict[str, str]:
    """diffusers module prefix -> LDM prefix for a UNet2DConditionModel config of any depth."""
    n = config.layers_per_block if isinstance(config.layers_per_block, int) else config.layers_per_block[0]
    levels = len(config.block_out_channels)
    mapping = dict(_UNET_TOP)
    for i in range(levels):
        for j in range(n):
            mapping[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{1 + i * (n + 1) + j}.0"
            mapping[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{1 + i * (n + 1) + j}.1"
        mapping[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (n + 1)}.0.op"
        has_attention = "CrossAttn" in config.up_block_types[i]
        for j in range(n + 1):
            mapping[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * (n + 1) + j}.0"
            mapping[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * (n + 1) + j}.1"
        mapping[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{i * (n + 1) + n}.{2 if has_attention else 1}"
    mapping.update({"mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
                    "mid_block.resnets.1": "middle_block.2"})
    return mapping


def _rename(key: str, prefix_map: dict[str, str]) -> str:
    """Longest matching module prefix replaced; resnet sublayers renamed."""
    for prefix in sorted(prefix_map, key=len, reverse=True):
        if key == prefix or key.startswith(prefix + "."):
            rest = key[len(prefix):]
            if ".resnets." in prefix or prefix.startswith("mid_block.resnets"):
                for old, new in _RESNET_TO_LDM:
                    rest = rest.replace(f".{old}.", f".{new}.")
            return prefix_map[prefix] + rest
    raise KeyError(f"no LDM name for diffusers key {key}")


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict in the original `model.diffusion_model.*` layout."""
    prefix_map = _unet_prefix_map(unet.config)
    return {f"model.diffusion_model.{_rename(k, prefix_map)}": v for k, v in unet.state_dict().items()}


def _vae_prefix_map(config) -> dict[str, str]:
    levels = len(config.block_out_channels)
    n = config.layers_per_block
    mapping = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    for part in ("encoder", "decoder"):
        mapping[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        mapping[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        mapping[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
    for i in range(levels):
        for j in range(n):
            mapping[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        mapping[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
        for j in range(n + 1):
            mapping[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
        mapping[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{levels - 1 - i}.upsample"
    return mapping


_VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict in the original `first_stage_model.*` layout (attention linears as 1x1 convs)."""
    prefix_map = _vae_prefix_map(vae.config)
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for prefix in sorted(prefix_map, key=len, reverse=True):
            if key.startswith(prefix + "."):
                new = prefix_map[prefix] + key[len(prefix):]
                break
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".attn_1." in new:
            for old, replacement in _VAE_ATTENTION:
                new = new.replace(f".attn_1.{old}.", f".attn_1.{replacement}.")
            if new.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]  # [C, C] -> [C, C, 1, 1]
        out[f"first_stage_model.{new}"] = value
    return out


def text_encoder_to_ldm(text_encoder, prefix: str = "cond_stage_model.transformer.text_model.") -> dict:
    """CLIPTextModel state dict under the SD1.x prefix, whether or not transformers keeps `text_model.`."""
    out = {}
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        out[prefix + re.sub(r"^text_model\.", "", key)] = value
    return out


def build_sd15_checkpoint(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Write the shallow SD1.5 single-file checkpoint (safetensors, original layout) and return its path."""
    path = Path(path)
    if path.exists():
        return path
    unet, vae, text_encoder = build_sd15_components(seed)
    state = {**unet_to_ldm(unet), **vae_to_ldm(vae), **text_encoder_to_ldm(text_encoder)}
    state = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return path


# -- kohya LoRA --------------------------------------------------------------------------------

ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def lora_target_modules(unet, targets=ATTENTION_TARGETS) -> dict[str, tuple[int, int]]:
    """diffusers module path -> (in_features, out_features) of every targeted attention Linear."""
    found = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith("." + t) for t in targets):
            found[name] = (module.in_features, module.out_features)
    return found


def build_kohya_lora(path: Path, rank: int = 4, alpha: float = 2.0, seed: int = 7, scale: float = 0.3,
                     unet_config: dict | None = None) -> Path:
    """Random kohya LoRA (`lora_unet_<path>.lora_down/.lora_up/.alpha`) for the fixture UNet's attention."""
    from diffusers import UNet2DConditionModel

    path = Path(path)
    if path.exists():
        return path
    with torch.device("meta"):
        unet = UNet2DConditionModel(**(unet_config or SHALLOW_SD15_UNET))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, (fan_in, fan_out) in lora_target_modules(unet).items():
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lora_down.weight"] = torch.randn(rank, fan_in, generator=generator) * scale / fan_in**0.5
        state[f"{key}.lora_up.weight"] = torch.randn(fan_out, rank, generator=generator) * scale
        state[f"{key}.alpha"] = torch.tensor(float(alpha))
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(alpha)})
    tmp.replace(path)
    return path

"""Tiny diffusers models for training tests: a pixel-space toy DiffusionModel, tiny SD1.x / SDXL pipeline dirs."""

from __future__ import annotations

import zlib

import torch

TINY_PIXEL_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4,
)


class ToyTextEncoder(torch.nn.Module):
    """Deterministic word-hash embeddings: prompt -> [4, D] (one row per word, zero padded)."""

    def __init__(self, dim: int = 8, length: int = 4, buckets: int = 64, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(buckets, dim, generator=generator), requires_grad=False)
        self.length, self.buckets = length, buckets

    def forward(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), self.length, self.table.shape[1])
        for b, prompt in enumerate(prompts):
            for i, word in enumerate(prompt.split()[: self.length]):
                out[b, i] = self.table[zlib.crc32(word.encode()) % self.buckets]
        return out


def make_scheduler(prediction_type: str = "epsilon", num_train_timesteps: int = 1000):
    """DDIM with SD's scaled-linear betas and leading spacing (steps_offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )


def tiny_pixel_model(prediction_type: str = "epsilon", seed: int = 0, lora_rank: int = 4, lora_init: str = "zero"):
    """A pixel-space DiffusionModel (8x8 RGB) with a peft LoRA adapter on the attention projections.

    lora_init="zero": standard init (B = 0, the tuned model equals the base); "random": B random too.
    """
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from comfy_aig.training.sampling import Conditioning, DiffusionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_PIXEL_UNET)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=True))
    if lora_init == "random":
        generator = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    encoder = ToyTextEncoder(dim=TINY_PIXEL_UNET["cross_attention_dim"])
    return DiffusionModel(
        unet=unet, scheduler=make_scheduler(prediction_type),
        encode_prompts=lambda prompts: Conditioning(encoder(prompts)),
        decode=lambda x: ((x + 1) / 2).clamp(0, 1), latent_shape=(3, 8, 8),
    )


def lora_parameters(unet) -> list[torch.nn.Parameter]:
    """The trainable LoRA parameters of a UNet with a peft adapter."""
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def redness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    """Toy colour reward: mean(R - (G + B) / 2) per image. [B, 3, H, W] -> [B]."""
    return (images[:, 0] - 0.5 * (images[:, 1] + images[:, 2])).mean(dim=(1, 2))


# -- tiny SD1.x / SDXL pipelines in real layouts ---------------------------------------------------

TINY_SD_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
    sample_size=16, scaling_factor=0.18215,
)
TINY_CLIP = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1,
    projection_dim=32,
)
TINY_SDXL_UNET = dict(
    TINY_SD_UNET, cross_attention_dim=80, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=48 + 6 * 8, use_linear_projection=True,
)
TINY_CLIP_G = dict(TINY_CLIP, hidden_size=48, intermediate_size=96, num_attention_heads=4, projection_dim=48,
                   hidden_act="gelu")


def _scheduler_from_shipped():
    from diffusers import DDIMScheduler

    from comfy_aig.training.models import shipped_config_dir

    return DDIMScheduler.from_pretrained(str(shipped_config_dir("sd15")), subfolder="scheduler")


def build_tiny_sd15(root, seed: int = 0):
    """(diffusers dir, single-file .safetensors in original layout) of one tiny SD1.x model; cached in root."""
    from pathlib import Path

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from aig_testkit.sd_fixtures import build_sd15_components, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
    from comfy_aig.core.rewards.tokenizer import build_clip_tokenizer

    root = Path(root)
    directory, single = root / "tiny_sd15", root / "tiny_sd15.safetensors"
    if single.exists():
        return directory, single
    unet, vae, text_encoder = build_sd15_components(seed, TINY_SD_UNET, TINY_VAE, TINY_CLIP)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), unet=unet,
                                   scheduler=_scheduler_from_shipped(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(directory)
    state = {**unet_to_ldm(unet), **vae_to_ldm(vae), **text_encoder_to_ldm(text_encoder)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(single))
    return directory, single


def build_tiny_sdxl(root, seed: int = 0):
    """A tiny SDXL diffusers dir (two text encoders of different widths, text_time conditioning)."""
    from pathlib import Path

    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from aig_testkit.sd_fixtures import _small_init
    from comfy_aig.core.rewards.tokenizer import build_clip_tokenizer

    directory = Path(root) / "tiny_sdxl"
    if (directory / "model_index.json").exists():
        return directory
    unet = _small_init(UNet2DConditionModel(**TINY_SDXL_UNET), seed)
    vae = _small_init(AutoencoderKL(**TINY_VAE), seed + 1)
    te1 = _small_init(CLIPTextModel(CLIPTextConfig(**TINY_CLIP)), seed + 2)
    te2 = _small_init(CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP_G)), seed + 3)
    tok = build_clip_tokenizer()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=_scheduler_from_shipped())
    pipe.save_pretrained(directory)
    return directory


def open_clip_text_to_ldm(text_encoder, prefix: str = "conditioner.embedders.1.model.") -> dict:
    """CLIPTextModelWithProjection state dict in OpenCLIP layout (SDXL's second text encoder in a single file)."""
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()
          if not k.endswith("position_ids")}
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"],
           prefix + "text_projection": sd["text_projection.weight"].T.contiguous()}  # x @ P in OpenCLIP
    i = 0
    while f"encoder.layers.{i}.layer_norm1.weight" in sd:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        out[dst + "attn.in_proj_weight"] = torch.cat([sd[src + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[dst + "attn.in_proj_bias"] = torch.cat([sd[src + f"self_attn.{x}_proj.bias"] for x in "qkv"])
        for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[f"{dst}{b}.weight"], out[f"{dst}{b}.bias"] = sd[f"{src}{a}.weight"], sd[f"{src}{a}.bias"]
        i += 1
    return out


def build_tiny_sdxl_single_file(root, directory):
    """The tiny SDXL dir written as one original-layout .safetensors (CLIP-L + OpenCLIP text encoders)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from aig_testkit.sd_fixtures import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
    from comfy_aig.training.models import load_pipeline

    single = Path(root) / "tiny_sdxl.safetensors"
    if single.exists():
        return single
    pipe = load_pipeline(directory)
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae),
             **text_encoder_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer.text_model."),
             **open_clip_text_to_ldm(pipe.text_encoder_2)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(single))
    return single

"""Tiny models of every family AIG supports, built in-process from ComfyUI's own model classes.

SD1.x (eps), SD2.x (v-prediction), SDXL (eps, pooled + size conditioning), SD3 (MMDiT, rectified flow with
shift 3) and Flux (guidance-distilled flow): each is `comfy.supported_models.<Family>` with a small
unet_config, its `model_base` class and random weights, wrapped in a CPU ModelPatcher, plus random
conditioning of the shapes that family reads. LoRA state dicts are written in each family's real key
layout from ComfyUI's own key map (`comfy.lora.model_lora_keys_unet`). Call only after `comfy_inprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "in_channels": 4, "out_channels": 4, "model_channels": 64, "num_res_blocks": [1], "transformer_depth": [1],
        "transformer_depth_output": [1, 1], "channel_mult": [1], "transformer_depth_middle": 1,
        "use_temporal_resblock": False, "use_temporal_attention": False, "num_head_channels": 32}
CONTEXT = 64  # cross-attention width of every tiny family
POOLED = 32  # pooled text embedding width (SDXL, SD3, Flux)
FAMILIES = ("sd15", "sd2_v", "sdxl", "sd3", "flux")


@dataclass
class Family:
    """A tiny model of one family and the inputs it needs."""

    name: str
    model: object  # ModelPatcher
    positive: list
    negative: list
    latent_channels: int
    latent_size: int = 8


def _config(name: str):
    """(supported_models config, model_base class, model type) of a tiny model of the family."""
    import comfy.model_base as mb
    import comfy.supported_models as sm

    if name == "sd15":
        return sm.SD15(dict(UNET, context_dim=CONTEXT, adm_in_channels=None)), mb.BaseModel, mb.ModelType.EPS
    if name == "sd2_v":
        cfg = dict(UNET, context_dim=CONTEXT, adm_in_channels=None, use_linear_in_transformer=True)
        return sm.SD20(cfg), mb.BaseModel, mb.ModelType.V_PREDICTION
    if name == "sdxl":
        cfg = dict(UNET, context_dim=CONTEXT, adm_in_channels=POOLED + 6 * 256, use_linear_in_transformer=True,
                   num_classes="sequential")
        return sm.SDXL(cfg), mb.SDXL, mb.ModelType.EPS
    if name == "sd3":
        cfg = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "num_patches": 64,
               "pos_embed_max_size": 8, "pos_embed_scaling_factor": None, "adm_in_channels": POOLED,
               "context_embedder_config": {"target": "torch.nn.Linear",
                                           "params": {"in_features": CONTEXT, "out_features": 128}}}
        return sm.SD3(cfg), mb.SD3, mb.ModelType.FLOW
    if name == "flux":
        cfg = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": POOLED,
               "context_in_dim": CONTEXT, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
               "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True,
               "guidance_embed": True}
        return sm.Flux(cfg), mb.Flux, mb.ModelType.FLUX
    raise ValueError(f"unknown family {name!r}; use one of {FAMILIES}")


REAL_SIZE_UNET = {  # the true SD1.5 and SDXL UNets (860M, 2.57B parameters) and SD3 medium, as ComfyUI detects them
    "sd15": {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
             "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "channel_mult": [1, 2, 4, 4],
             "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
             "use_temporal_resblock": False, "use_temporal_attention": False, "num_heads": 8, "num_head_channels": -1},
    "sdxl": {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
             "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "out_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "channel_mult": [1, 2, 4],
             "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048,
             "use_temporal_resblock": False, "use_temporal_attention": False, "num_head_channels": 64},
    # SD3 medium's MMDiT (2.0B), as ComfyUI detects sd3_medium.safetensors
    "sd3": {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 24, "input_size": None,
            "adm_in_channels": 2048, "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
            "x_block_self_attn_layers": [],
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 4096, "out_features": 1536}}},
}
# (tokens, context width, pooled width): CLIP for SD1.5/SDXL; CLIP-L/G + T5 (77 + 77 tokens) for SD3
REAL_SIZE_CONDS = {"sd15": (77, 768, None), "sdxl": (77, 2048, 1280), "sd3": (154, 4096, 2048)}
REAL_SIZE_CLASSES = {"sd15": ("SD15", "BaseModel", "EPS"), "sdxl": ("SDXL", "SDXL", "EPS"),
                     "sd3": ("SD3", "SD3", "FLOW")}  # (supported_models, model_base, ModelType) names


def real_size_model(name: str, seed: int = 0, load_device: str = "cpu", dtype: torch.dtype = torch.float32):
    """ModelPatcher of a random-weight SD1.5 / SDXL UNet or SD3 MMDiT of the true size (it times like the
    real one), built on the CPU and loaded by ComfyUI onto `load_device` when sampling."""
    import comfy.model_base as mb
    import comfy.supported_models as sm

    config_name, model_name, model_type = REAL_SIZE_CLASSES[name]
    config = getattr(sm, config_name)(dict(REAL_SIZE_UNET[name]))
    return _patcher(config, getattr(mb, model_name), getattr(mb.ModelType, model_type), seed, std=0.02,
                    load_device=load_device, dtype=dtype)


def real_size_conds(name: str, seed: int = 0):
    """(positive, negative) of text-encoder-shaped random embeddings [1, tokens, width] (+ pooled where read)."""
    tokens, width, pooled = REAL_SIZE_CONDS[name]
    gen = torch.Generator().manual_seed(seed)

    def one():
        extra = {} if pooled is None else {"pooled_output": torch.randn(1, pooled, generator=gen)}
        return [[torch.randn(1, tokens, width, generator=gen), extra]]

    return one(), one()


def tiny_model(name: str, seed: int = 0):
    """CPU ModelPatcher of a random-weight tiny model of the family (float32)."""
    config, model_class, model_type = _config(name)
    return _patcher(config, model_class, model_type, seed, std=0.05)


def _patcher(config, model_class, model_type, seed: int, std: float, load_device: str = "cpu",
             dtype: torch.dtype = torch.float32):
    """The model with every diffusion-model parameter and float buffer drawn from N(0, std^2), built on the CPU in
    a ModelPatcher that loads it onto `load_device` (offloads to the CPU)."""
    import comfy.model_patcher

    config.set_inference_dtype(dtype, None)
    model = model_class(config, model_type=model_type, device="cpu")
    gen = torch.Generator().manual_seed(seed)
    # ComfyUI's layers skip init and MMDiT's pos_embed is an empty buffer: fill every one, or memory garbage
    # (seen: 1e25) reaches the outputs
    tensors = [*model.diffusion_model.parameters(),
               *(b for b in model.diffusion_model.buffers() if b.is_floating_point())]
    with torch.no_grad():
        for tensor in tensors:
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device(load_device),
                                            offload_device=torch.device("cpu"))


def random_conds(name: str, seed: int = 0, guidance: float = 3.5):
    """(positive, negative) CONDITIONING of the family's shapes: cross-attention [1, 16, 64], pooled where read."""
    gen = torch.Generator().manual_seed(seed)

    def one():
        extra = {}
        if name in ("sdxl", "sd3", "flux"):
            extra["pooled_output"] = torch.randn(1, POOLED, generator=gen)
        if name == "flux":
            extra["guidance"] = guidance
        return [[torch.randn(1, 16, CONTEXT, generator=gen), extra]]

    return one(), one()


def family(name: str, seed: int = 0) -> Family:
    """The tiny model and conditioning of one family."""
    positive, negative = random_conds(name, seed)
    channels = 16 if name in ("sd3", "flux") else 4
    return Family(name, tiny_model(name, seed), positive, negative, channels)


def noise_for(fam: Family, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Latent noise [B, C, 8, 8] of the family's channel count."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, fam.latent_channels, fam.latent_size, fam.latent_size, generator=gen)


def lora_key_layout(model, layout: str, limit: int | None = 6, attention_only: bool = False) -> dict:
    """{LoRA key prefix: model key or (model key, offset)} of one real key layout, from ComfyUI's key map.

    layout: "kohya" (lora_unet_...), "diffusers" (diffusion_model.* / transformer.* with peft lora_A/B),
    "bfl" (Flux's own block names, kohya style). At most `limit` layers, the fused-qkv slices first."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    weights = model.model.state_dict()
    wanted = {"kohya": ("lora_unet_",), "diffusers": ("transformer.", "unet."), "bfl": ("lora_unet_",)}[layout]
    def target(v):
        return v if isinstance(v, str) else v[0]

    chosen = {k: v for k, v in key_map.items()  # Linear layers this model has
              if k.startswith(wanted) and target(v) in weights and weights[target(v)].ndim == 2}
    # attention projections first, and among them the ones ComfyUI maps onto fused qkv slices
    order = sorted(chosen.items(), key=lambda kv: (not isinstance(kv[1], tuple), "attn" not in kv[0], kv[0]))
    if attention_only:
        order = [kv for kv in order if "attn" in kv[0]]
    return dict(order[:limit])


def lora_state_dict(model, layout: str, rank: int = 4, seed: int = 0, limit: int | None = 6,
                    attention_only: bool = False) -> dict:
    """A LoRA in that layout: up/down (or lora_B/lora_A) and alpha per layer, sized from the model's weights."""
    gen = torch.Generator().manual_seed(seed)
    weights = model.model.state_dict()
    state = {}
    for prefix, target in lora_key_layout(model, layout, limit, attention_only).items():
        key, offset = (target, None) if isinstance(target, str) else target
        out_features, in_features = weights[key].shape[0], weights[key].shape[1]
        if offset is not None:
            out_features = offset[2]
        down = torch.randn(rank, in_features, generator=gen) * 0.3
        up = torch.randn(out_features, rank, generator=gen) * 0.3
        if layout == "diffusers":
            state[f"{prefix}.lora_A.weight"], state[f"{prefix}.lora_B.weight"] = down, up
        else:
            state[f"{prefix}.lora_down.weight"], state[f"{prefix}.lora_up.weight"] = down, up
        state[f"{prefix}.alpha"] = torch.tensor(float(rank) / 2)
    if not state:
        raise ValueError(f"ComfyUI maps no {layout} LoRA keys onto this model")
    return state

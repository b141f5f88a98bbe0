"""Test-only ComfyUI nodes, installed beside the pack in the test server (never shipped).

`TestRandomConditioning` makes CONDITIONING of a chosen shape, so that a family whose text encoders are too
large to build in a test (SD3's CLIP-G and T5) can be sampled through the server from a small model file.
"""

import torch


class TestRandomConditioning:
    """CONDITIONING [[cross-attention [1, tokens, width], {pooled_output: [1, pooled_width]}]] from a seed."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        number = {"min": 0, "max": 8192}
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            "tokens": ("INT", {"default": 16, "min": 1, "max": 512}),
            "width": ("INT", {"default": 64, **number}),
            "pooled_width": ("INT", {"default": 0, **number}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens, width, pooled_width):
        generator = torch.Generator().manual_seed(seed)
        cross = torch.randn(1, tokens, width, generator=generator)
        extra = {"pooled_output": torch.randn(1, pooled_width, generator=generator)} if pooled_width else {}
        return ([[cross, extra]],)


NODE_CLASS_MAPPINGS = {"TestRandomConditioning": TestRandomConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"TestRandomConditioning": "Random conditioning (tests)"}

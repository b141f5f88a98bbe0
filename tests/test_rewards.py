"""Reward library: parity with the reference pipelines, gradients, chunking, dtypes, auto-detection, bad input.

Reference pipelines: transformers CLIPImageProcessor (+ the PIL variant) + CLIPModel for PickScore/CLIPScore,
OpenCLIP's validation transform (resize_mode='longest') + model for HPS. Our preprocessing is torch ops
(bicubic, antialiased) instead of PIL on uint8; PIL rounds to uint8 after each of its two resize passes,
so on natural-looking images pixels differ by up to ~2 uint8 levels (0.03 after mean/std normalisation);
fed the *same* pixels, the networks and score formulas must agree to float rounding (1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aig_testkit.reward_fixtures import (
    TINY_OPEN_CLIP_CFG,
    build_hps_file,
    build_pickscore_dir,
    tiny_open_clip_model,
)
from comfy_aig.core.rewards import load_reward_model
from comfy_aig.core.rewards.preprocess import clip_preprocess

PIXEL_TOL_MAX = 0.04  # normalised units (~2.7 uint8 levels): PIL's per-pass uint8 rounding vs float torch
PIXEL_TOL_MEAN = 0.006
SIZES = [(512, 512), (256, 320), (180, 150), (224, 224), (333, 517)]  # down, non-square, up, identity, odd


def natural_image(rng, h, w) -> Image.Image:
    """Smooth random image with mild noise (natural-image statistics, unlike pure noise)."""
    base = Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(base).astype(np.int16) + rng.integers(-10, 11, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W]


@pytest.fixture(scope="session")
def reward_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rewards")


@pytest.fixture(scope="session")
def pickscore_dir(reward_dir):
    return build_pickscore_dir(reward_dir / "PickScore_v1")


@pytest.fixture(scope="session")
def hps_file(reward_dir):
    return build_hps_file(reward_dir / "hps" / "HPS_v2.1_compressed.pt")


@pytest.fixture(scope="session")
def pickscore(pickscore_dir):
    return load_reward_model(pickscore_dir)


@pytest.fixture(scope="session")
def hps(hps_file):
    return load_reward_model(hps_file, model_config=TINY_OPEN_CLIP_CFG)


PROMPTS = ["a red circle on grey", "A photo of an astronaut riding a horse, 4k!", "bond"]


# --- preprocessing parity --------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_shortest_side_crop_matches_clip_image_processors(size):
    from transformers import CLIPImageProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    img = natural_image(np.random.default_rng(sum(size)), *size)
    ours = clip_preprocess(to_tensor(img), 224, "shortest")
    for processor in (CLIPImageProcessor(), CLIPImageProcessorPil()):
        ref = processor(images=[img], return_tensors="pt").pixel_values
        assert ours.shape == ref.shape == (1, 3, 224, 224)
        diff = (ours - ref).abs()
        assert diff.max() < PIXEL_TOL_MAX and diff.mean() < PIXEL_TOL_MEAN, (type(processor).__name__, diff.max())


@pytest.mark.parametrize("size", SIZES)
def test_longest_side_pad_matches_open_clip_transform(size):
    import open_clip

    img = natural_image(np.random.default_rng(sum(size) + 1), *size)
    ref = open_clip.image_transform(224, is_train=False, resize_mode="longest")(img)[None]
    ours = clip_preprocess(to_tensor(img), 224, "longest")
    diff = (ours - ref).abs()
    assert ours.shape == ref.shape and diff.max() < PIXEL_TOL_MAX and diff.mean() < PIXEL_TOL_MEAN, diff.max()


# --- score parity ----------------------------------------------------------------------------------

def _pickscore_reference(model_dir, images, prompts):
    """PickScore as its README computes it: processor + CLIPModel, logit_scale.exp() * cosine."""
    from transformers import CLIPImageProcessor, CLIPModel

    from comfy_aig.core.rewards.tokenizer import build_clip_tokenizer

    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    pixels = CLIPImageProcessor()(images=images, return_tensors="pt").pixel_values
    tok = build_clip_tokenizer()(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(**tok).pooler_output
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return model.logit_scale.exp() * (img * txt).sum(-1), pixels


def test_pickscore_matches_reference_pipeline(pickscore, pickscore_dir):
    rng = np.random.default_rng(0)
    images = [natural_image(rng, 256, 320) for _ in PROMPTS]
    ref, ref_pixels = _pickscore_reference(pickscore_dir, images, PROMPTS)
    batch = torch.cat([to_tensor(i) for i in images])
    with torch.no_grad():
        ours = pickscore.score(batch, PROMPTS)
        # same pixels in -> same scores to float rounding (network, pooling, tokenizer, formula)
        same_pixels = pickscore.backbone.logit_scale.exp() * (
            torch.nn.functional.normalize(pickscore.backbone.encode_image(ref_pixels), dim=-1)
            * pickscore.text_features(PROMPTS)).sum(-1)
    torch.testing.assert_close(same_pixels, ref, atol=1e-5, rtol=1e-5)
    # end to end: the <=0.03 pixel difference moves the score by ~0.02 here; allow 0.1 (0.05% of the range)
    assert (ours - ref).abs().max() < 0.1, (ours, ref)  # logit scale 100 -> scores in [-100, 100]
    assert torch.argsort(ours).tolist() == torch.argsort(ref).tolist()


def test_hps_matches_open_clip_pipeline(hps):
    import open_clip

    model = tiny_open_clip_model()
    transform = open_clip.image_transform(224, is_train=False, resize_mode="longest")
    rng = np.random.default_rng(1)
    images = [natural_image(rng, *s) for s in [(300, 200), (200, 300), (224, 224)]]
    tokens = open_clip.tokenizer.SimpleTokenizer()(PROMPTS)
    with torch.no_grad():
        img = model.encode_image(torch.stack([transform(i) for i in images]), normalize=True)
        txt = model.encode_text(tokens, normalize=True)
        ref = (img * txt).sum(-1)
        ours = torch.cat([hps.score(to_tensor(i), [p]) for i, p in zip(images, PROMPTS)])
    assert (ours - ref).abs().max() < 2e-3, (ours, ref)  # cosine in [-1, 1]; observed ~1e-4


# --- gradients, chunking, dtypes -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pickscore", "hps"])
def test_gradients_reach_pixels(name, request):
    model = request.getfixturevalue(name)
    images = torch.rand(2, 3, 96, 128, requires_grad=True)
    model.score(images, PROMPTS[:2]).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    features = torch.rand(2, 3, 64, 64, requires_grad=True)
    model.image_features(features).pow(2).sum().backward()  # normalised -> constant; use a non-trivial target
    assert features.grad is not None


def test_image_features_are_normalised_and_gradients_flow(pickscore):
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    feats = pickscore.image_features(images)
    assert feats.shape == (3, 16)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    feats[:, 0].sum().backward()
    assert images.grad.abs().sum() > 0


def test_chunked_equals_unchunked_and_reports_progress(hps):
    images = torch.rand(5, 3, 64, 80)
    prompts = [PROMPTS[i % 3] for i in range(5)]
    calls = []
    chunked = hps.score(images, prompts, chunk_size=2, progress=lambda done, total: calls.append((done, total)))
    torch.testing.assert_close(chunked, hps.score(images, prompts), atol=1e-5, rtol=1e-5)
    assert calls == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_tracks_fp32(dtype, hps, hps_file):
    half = load_reward_model(hps_file, model_config=TINY_OPEN_CLIP_CFG, dtype=dtype)
    assert half.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    scores = half.score(images, PROMPTS)
    assert scores.dtype == torch.float32
    assert (scores - hps.score(images, PROMPTS)).abs().max() < 0.02  # bf16 has ~3 significant digits
    scores.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_text_cached_in_inference_mode_is_safe_for_gradients(hps):
    prompts = ["an inference-mode prompt", "another one"]
    with torch.inference_mode():
        first = hps.score(torch.rand(2, 3, 32, 32), prompts)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    hps.score(images, prompts).sum().backward()  # must not reuse inference tensors in the graph
    assert images.grad.abs().sum() > 0 and first.shape == (2,)


def test_gradient_checkpointing_gives_the_same_gradients(hps):
    images = torch.rand(5, 3, 48, 64)
    grads = []
    for flag in (False, True):
        x = images.clone().requires_grad_(True)
        hps.gradient_checkpointing, hps.chunk_size = flag, 2
        try:
            hps.score(x, [PROMPTS[i % 3] for i in range(5)]).pow(2).sum().backward()
        finally:
            hps.gradient_checkpointing, hps.chunk_size = False, 32
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)

"""Evaluation node adapters in-process (ComfyUI importable, no server): feature sources, diversity, prompt list."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def nodes(comfy_inprocess):
    from comfy_aig.nodes import diversity, evaluation

    return diversity, evaluation


class FakeClipVision:
    """Stands in for comfy.clip_vision.ClipVisionModel: encode_image takes IMAGE [B, H, W, C]."""

    image_size = 224

    def __init__(self):
        self.seen = None

    def encode_image(self, image):
        self.seen = image.shape
        return {"image_embeds": image.mean(dim=(1, 2)) @ torch.ones(3, 5)}  # [B, 5]


class MeanColourReward(torch.nn.Module):
    """A RewardModel-shaped object: image_features [B, 3, H, W] -> [B, 3], score -> [B]."""

    kind = "meancolour"

    def image_features(self, images):
        assert images.shape[1] == 3
        return images.mean(dim=(2, 3))

    def score(self, images, prompts, chunk_size=None, progress=None):
        assert len(prompts) == images.shape[0]
        return images.mean(dim=(1, 2, 3))


class Handle:
    """The rewards loader's output: the model plus ensure_loaded()."""

    def __init__(self):
        self.model, self.loaded = MeanColourReward(), False

    def ensure_loaded(self):
        self.loaded = True


def image(batch=4, seed=0):
    return torch.rand(batch, 8, 6, 3, generator=torch.Generator().manual_seed(seed))  # IMAGE [B, H, W, C]


def test_clip_vision_features_get_channels_last_images(nodes):
    diversity, _ = nodes
    clip = FakeClipVision()
    batch = diversity.extract_features(image(), "connected model", 16, clip_vision=clip)
    assert clip.seen == (4, 8, 6, 3)
    assert batch.values.shape == (4, 5) and batch.source == "clip_vision:224:5"


def test_reward_model_features_use_the_image_tower(nodes):
    diversity, evaluation = nodes
    handle, img = Handle(), image()
    batch = diversity.extract_features(img, "connected model", 16, reward_model=handle)
    assert handle.loaded and batch.source == "reward:meancolour:3"
    torch.testing.assert_close(batch.values, img.mean(dim=(1, 2)))
    scores = evaluation.reward_scores(handle, img, "a prompt")
    torch.testing.assert_close(torch.from_numpy(scores), img.mean(dim=(1, 2, 3)))


def test_pixel_features_are_area_downsampled(nodes):
    diversity, _ = nodes
    img = image()
    batch = diversity.extract_features(img, "pixels", 2)
    expected = torch.nn.functional.avg_pool2d(img.permute(0, 3, 1, 2), (4, 3)).flatten(1)
    torch.testing.assert_close(batch.values, expected)
    assert batch.source == "pixels:2"


def test_exactly_one_feature_model_must_be_connected(nodes):
    diversity, _ = nodes
    with pytest.raises(ValueError, match="exactly one feature model"):
        diversity.extract_features(image(), "connected model", 16)
    with pytest.raises(ValueError, match=r"\['clip_vision', 'reward_model'\]"):
        diversity.extract_features(image(), "connected model", 16, reward_model=Handle(), clip_vision=FakeClipVision())


def test_reward_scores_need_both_inputs(nodes):
    _, evaluation = nodes
    assert evaluation.reward_scores(None, None, "p") is None
    with pytest.raises(ValueError, match="connect both reward_model and images"):
        evaluation.reward_scores(Handle(), None, "p")


def test_diversity_node_outputs_metrics_and_refuses_mixed_sources(nodes):
    diversity, _ = nodes
    from comfy_aig.core.diversity import diversity_metrics

    ref = diversity.FeatureBatch(torch.randn(12, 4), "pixels:2")
    other = diversity.FeatureBatch(0.5 * torch.randn(12, 4), "pixels:2")
    out = diversity.AIGDiversity.execute(features=other, reference=ref, k=3)
    expected = diversity_metrics(ref.values, other.values, k=3)
    assert out.result[:6] == tuple(expected[k] for k in ("scd", "log_scd", "fid", "precision", "recall", "vendi"))
    assert "scd:" in out.result[6]
    with pytest.raises(ValueError, match="same feature model"):
        diversity.AIGDiversity.execute(features=diversity.FeatureBatch(other.values, "clip_vision:224:4"),
                                       reference=ref, k=3)

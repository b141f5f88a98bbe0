"""AIGImageFeatures, AIGInceptionLoader and AIGDiversity: image features and diversity metrics in ComfyUI."""

from __future__ import annotations

import os
from dataclasses import dataclass

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..core.diversity import DiversityInputError, diversity_metrics
from ..core.features import feature_source_name, load_fid_inception, pixel_features, reward_kind
from .combos import ListedCombo
from .folders import model_file
from .reward_loader import REWARD_MODEL, loaded_model
from .rewards import to_nchw

FeaturesType = io.Custom("AIG_FEATURES")  # FeatureBatch
InceptionType = io.Custom("AIG_INCEPTION")  # core.features.InceptionFeatures
INCEPTION_FOLDER = "inception"
SOURCES = ("connected model", "pixels")


@dataclass
class FeatureBatch:
    """Features [B, D] (float32, CPU) of one batch of images and the name of the model that made them."""

    values: torch.Tensor
    source: str


def ensure_inception_folder() -> None:
    """Register models/inception for FID Inception weights (.pth/.pt/.safetensors) if not yet registered."""
    if INCEPTION_FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, INCEPTION_FOLDER)
        folder_paths.folder_names_and_paths[INCEPTION_FOLDER] = ([path], {".pth", ".pt", ".safetensors"})


def extract_features(image, source, pixel_size, reward_model=None, clip_vision=None, inception=None) -> FeatureBatch:
    """Features of IMAGE [B, H, W, C] from exactly one connected model, or from pixels."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {list(SOURCES)}.")
    if source == "pixels":
        return FeatureBatch(pixel_features(to_nchw(image), pixel_size).cpu(), feature_source_name("pixels", pixel_size))
    connected = {name: m for name, m in
                 (("reward_model", reward_model), ("clip_vision", clip_vision), ("inception", inception))
                 if m is not None}
    if len(connected) != 1:
        raise ValueError(
            f"AIG Image Features needs exactly one feature model connected, got {sorted(connected) or 'none'}; "
            "connect one of reward_model / clip_vision / inception, or set source to 'pixels'."
        )
    (name, model), = connected.items()
    with torch.no_grad():
        if name == "reward_model":
            reward = loaded_model(model)
            values = reward.image_features(to_nchw(image))
            space = ("reward", reward_kind(reward))
        elif name == "clip_vision":
            values = model.encode_image(image)["image_embeds"]
            space = ("clip_vision", getattr(model, "image_size", "?"))
        else:
            values = model(to_nchw(image))
            space = ("inception", "pool3")
    values = values.detach().float().cpu().reshape(values.shape[0], -1)  # [B, D]
    return FeatureBatch(values, feature_source_name(*space, values.shape[1]))


class AIGImageFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGImageFeatures",
            display_name="AIG Image Features",
            category="AIG/evaluation",
            description="Feature vectors [B, D] of a batch of images for diversity metrics: a reward model's image "
            "tower, a CLIP vision model, the FID Inception network, or downsampled pixels.",
            inputs=[
                io.Image.Input("image", tooltip="Images to describe (a batch; no neutral value)."),
                ListedCombo("source", options=list(SOURCES), default=SOURCES[0],
                               tooltip="'connected model' uses the one model connected below (the usual choice); "
                               "'pixels' uses downsampled RGB pixels and needs no model."),
                io.Int.Input("pixel_size", default=16, min=2, max=128,
                             tooltip="pixels only: side of the downsampled image (16 -> 768 features)."),
                REWARD_MODEL.Input("reward_model", optional=True,
                                   tooltip="Reward model whose image embedding is the feature (neutral: "
                                   "unconnected)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision model (Load CLIP Vision): image_embeds are the features "
                                    "(neutral: unconnected)."),
                InceptionType.Input("inception", optional=True,
                                    tooltip="FID Inception network (AIG Inception Loader): pool3 features, as in "
                                    "FID (neutral: unconnected)."),
            ],
            outputs=[FeaturesType.Output(display_name="features")],
        )

    @classmethod
    def validate_inputs(cls, source=None):
        """V3 combos are not checked by ComfyUI 0.3.6x: refuse unknown sources at queue time."""
        if source is not None and source not in SOURCES:
            return f"source {source!r} is not one of {list(SOURCES)}."
        return True

    @classmethod
    def execute(cls, image, source, pixel_size, reward_model=None, clip_vision=None, inception=None) -> io.NodeOutput:
        batch = extract_features(image, source, pixel_size, reward_model, clip_vision, inception)
        return io.NodeOutput(batch)


class AIGInceptionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        ensure_inception_folder()
        return io.Schema(
            node_id="AIGInceptionLoader",
            display_name="AIG Inception Loader (FID)",
            category="AIG/evaluation",
            description="Loads the standard FID Inception-v3 weights (pytorch-fid pt_inception-2015-12-05-*.pth, "
            "or a .safetensors copy) from models/inception. Nothing is downloaded.",
            inputs=[
                ListedCombo("weights", options=folder_paths.get_filename_list(INCEPTION_FOLDER),
                               tooltip="FID Inception weights file in models/inception (no neutral value)."),
            ],
            outputs=[InceptionType.Output(display_name="inception")],
        )

    @classmethod
    def execute(cls, weights) -> io.NodeOutput:
        return io.NodeOutput(load_fid_inception(model_file(INCEPTION_FOLDER, weights, "Inception weights")))


def format_metrics(metrics: dict) -> str:
    """One line per metric, for the UI."""
    return "\n".join(f"{key}: {value:.6g}" for key, value in metrics.items())


class AIGDiversity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGDiversity",
            display_name="AIG Diversity Metrics",
            category="AIG/evaluation",
            description="SCD, log-SCD, FID, k-NN precision/recall and Vendi of a batch's features against reference "
            "features (normally the base model's images for the same prompts and seeds).",
            inputs=[
                FeaturesType.Input("features", tooltip="Features of the images to judge (no neutral value)."),
                FeaturesType.Input("reference", tooltip="Features of the reference images, e.g. the base model's "
                                   "(same feature model; identical sets give SCD 0, recall 1)."),
                io.Int.Input("k", default=5, min=1, max=100,
                             tooltip="Neighbours for precision/recall manifolds (5 as in the paper); each set "
                             "needs more than k images."),
            ],
            outputs=[
                io.Float.Output(display_name="scd"), io.Float.Output(display_name="log_scd"),
                io.Float.Output(display_name="fid"), io.Float.Output(display_name="precision"),
                io.Float.Output(display_name="recall"), io.Float.Output(display_name="vendi"),
                io.String.Output(display_name="summary"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, features, reference, k) -> io.NodeOutput:
        if features.source != reference.source:
            raise DiversityInputError(
                f"features come from {features.source!r} but the reference from {reference.source!r}; "
                "extract both with the same feature model."
            )
        m = diversity_metrics(reference.values, features.values, k=k)
        summary = format_metrics(m)
        return io.NodeOutput(m["scd"], m["log_scd"], m["fid"], m["precision"], m["recall"], m["vendi"], summary,
                             ui=ui.PreviewText(summary))


DIVERSITY_NODES = [AIGImageFeatures, AIGInceptionLoader, AIGDiversity]

"""AIGScoreImages and AIGRankImages: score an IMAGE batch with a reward model, sort it, split off the top k.

``score_images`` is the one way the nodes score images (Eval Collect uses it too)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io, ui

from .reward_loader import REWARD_LOADER_NODES, REWARD_MODEL, RewardHandle, loaded_model

DEFAULT_CHUNK = 16


def prompts_for_batch(text: str, per_line: bool, batch: int) -> list[str]:
    """One prompt for every image, or one non-empty line per image (count must match the batch)."""
    if not per_line:
        return [text] * batch
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != batch:
        raise ValueError(
            f"'one prompt per line' is on: got {len(lines)} non-empty lines for {batch} images; write one line per "
            "image or turn it off to use the whole text for every image."
        )
    return lines


def to_nchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] 0..1 -> [B, 3, H, W] float32 (alpha dropped)."""
    return image[..., :3].permute(0, 3, 1, 2).float().contiguous()


def score_images(handle: RewardHandle, images: torch.Tensor, prompts: list[str],
                 chunk_size: int | None = None) -> torch.Tensor:
    """Scores [B] (float32, CPU) of IMAGE [B, H, W, C]: chunked (None: the model's default), with a progress
    bar and an interrupt check per chunk; the shared, cached model keeps no per-call setting."""
    if images.dim() != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"expected a ComfyUI IMAGE [B, H, W, 3], got shape {tuple(images.shape)}.")
    model = loaded_model(handle)
    pbar = comfy.utils.ProgressBar(images.shape[0])

    def progress(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(done, total)

    with torch.no_grad():
        return model.score(to_nchw(images), prompts, chunk_size=chunk_size, progress=progress).float().cpu()


def summarize(kind: str, scores: list[float], order: list[int] | None = None) -> str:
    """Readable summary: statistics and the per-image scores (best first when order is given)."""
    t = torch.tensor(scores)
    head = (f"{kind} over {len(scores)} image(s): mean {t.mean():.4f}, min {t.min():.4f}, max {t.max():.4f}"
            + (f", std {t.std():.4f}" if len(scores) > 1 else ""))
    idx = order if order is not None else list(range(len(scores)))
    label = "best first" if order is not None else "per image"
    return head + f"\n{label}: " + ", ".join(f"#{i}: {scores[i]:.4f}" for i in idx)


def scored_previews(images: torch.Tensor, scores: list[float], text: str, cls) -> dict:
    """ui dict: temp previews of the images, their scores in the same order (web/ draws each on its preview)
    and the summary text."""
    return {**ui.PreviewImage(images, cls=cls).as_dict(), "aig_scores": [float(s) for s in scores], "text": [text]}


def _prompt_inputs(optional: bool = False) -> list:
    return [
        io.String.Input("prompt", multiline=True, default="", optional=optional,
                        tooltip="Prompt the images were made from (ignored by the aesthetic model); empty is neutral."),
        io.Boolean.Input("prompt_per_line", default=False, optional=optional,
                         tooltip="Off (neutral): the text is one prompt for all images. On: one line per image."),
        io.Int.Input("chunk_size", default=DEFAULT_CHUNK, min=1, max=1024, optional=optional,
                     tooltip="Images per forward pass; bounds memory, does not change scores (16 is neutral)."),
    ]


class AIGScoreImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGScoreImages",
            display_name="Score Images (AIG)",
            category="AIG/rewards",
            description="Scores every image of a batch with a reward model (PickScore, HPSv2, aesthetic, CLIPScore).",
            inputs=[
                REWARD_MODEL.Input("reward_model", tooltip="From Load Reward Model (AIG); no neutral value."),
                io.Image.Input("images", tooltip="Batch to score; no neutral value."),
                *_prompt_inputs(),
            ],
            outputs=[
                io.Float.Output(display_name="scores", is_output_list=True, tooltip="One score per image, in order."),
                io.String.Output(display_name="summary"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reward_model, images, prompt="", prompt_per_line=False, chunk_size=DEFAULT_CHUNK) -> io.NodeOutput:
        prompts = prompts_for_batch(prompt, prompt_per_line, images.shape[0])
        scores = score_images(reward_model, images, prompts, chunk_size).tolist()
        text = summarize(reward_model.kind, scores)
        return io.NodeOutput(scores, text, ui=scored_previews(images, scores, text, cls))


def _single(values, name, default=None):
    """Unwrap a one-element input list (is_input_list nodes receive every input as a list)."""
    if values is None or len(values) == 0:
        return default
    if len(values) != 1:
        raise ValueError(f"{name} got {len(values)} values; connect a single {name}.")
    return values[0]


def reorder_latent(latent: dict, index: torch.Tensor) -> dict:
    """LATENT dict with samples (and batch-sized noise_mask / batch_index) taken at index."""
    out = dict(latent)
    out["samples"] = latent["samples"][index]
    mask = latent.get("noise_mask")
    if isinstance(mask, torch.Tensor) and mask.shape[0] == latent["samples"].shape[0]:
        out["noise_mask"] = mask[index]
    if "batch_index" in latent:
        out["batch_index"] = [latent["batch_index"][i] for i in index.tolist()]
    return out


def rank(images: torch.Tensor, scores: list[float], top_k: int, latent: dict | None = None):
    """(order best first, sorted images, top images, rest images, top latent, rest latent); stable for ties."""
    if len(scores) != images.shape[0]:
        raise ValueError(f"got {len(scores)} scores for {images.shape[0]} images; score the same batch you rank.")
    if latent is not None and latent["samples"].shape[0] != images.shape[0]:
        raise ValueError(
            f"latent batch {latent['samples'].shape[0]} does not match image batch {images.shape[0]}; "
            "connect the latent the images were decoded from."
        )
    order = torch.sort(torch.tensor(scores, dtype=torch.float64), descending=True, stable=True).indices
    k = min(top_k, len(scores))
    top, rest = order[:k], order[k:]
    lat_top = reorder_latent(latent, top) if latent is not None else None
    lat_rest = reorder_latent(latent, rest) if latent is not None else None
    return order, images[order], images[top], images[rest], lat_top, lat_rest


class AIGRankImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGRankImages",
            display_name="Rank Images by Reward (AIG)",
            category="AIG/rewards",
            description="Sorts a batch best first by reward (given scores, or a reward model), and splits off the "
            "top k images with their latents. Latent outputs are empty when no latent is connected.",
            inputs=[
                io.Image.Input("images", tooltip="Batch to rank; no neutral value."),
                io.Int.Input("top_k", default=1, min=1, max=4096,
                             tooltip="How many best images go to the top outputs (1 is the usual best-of-n)."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Latents of the same batch, reordered alongside; leave empty (neutral) if unused."),
                io.Float.Input("scores", optional=True, force_input=True,
                               tooltip="Scores from Score Images (AIG), one per image; leave empty to use the reward model."),
                REWARD_MODEL.Input("reward_model", optional=True,
                                   tooltip="Used when no scores are connected; leave empty (neutral) when scores are."),
                *_prompt_inputs(optional=True),
            ],
            outputs=[
                io.Image.Output(display_name="sorted_images"),
                io.Image.Output(display_name="top_images"),
                io.Latent.Output(display_name="top_latent"),
                io.Image.Output(display_name="rest_images"),
                io.Latent.Output(display_name="rest_latent"),
                io.Float.Output(display_name="sorted_scores", is_output_list=True),
                io.String.Output(display_name="summary"),
            ],
            is_input_list=True,
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, top_k, latent=None, scores=None, reward_model=None, prompt=None, prompt_per_line=None,
                chunk_size=None) -> io.NodeOutput:
        batch = torch.cat(list(images), dim=0) if len(images) > 1 else images[0]
        k = _single(top_k, "top_k")
        lat = _single(latent, "latent")
        handle = _single(reward_model, "reward_model")
        if scores:
            values, kind = [float(s) for s in scores], "scores"
        elif handle is not None:
            prompts = prompts_for_batch(_single(prompt, "prompt", ""), _single(prompt_per_line, "prompt_per_line", False),
                                        batch.shape[0])
            values = score_images(handle, batch, prompts, _single(chunk_size, "chunk_size", DEFAULT_CHUNK)).tolist()
            kind = handle.kind
        else:
            raise ValueError("connect either scores (from Score Images) or a reward model to rank the images.")
        order, ranked, top, rest, lat_top, lat_rest = rank(batch, values, k, lat)
        sorted_scores = [values[i] for i in order.tolist()]
        text = summarize(kind, values, order.tolist())
        return io.NodeOutput(ranked, top, lat_top, rest, lat_rest, sorted_scores, text,
                             ui=scored_previews(ranked, sorted_scores, text, cls))


REWARD_NODES = [*REWARD_LOADER_NODES, AIGScoreImages, AIGRankImages]

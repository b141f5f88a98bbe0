"""The demo's feature network (its "Inception"): a small CNN trained on the shape world with heavy nuisances.

Diversity in the paper is measured on Inception features, so that it means content (what, which colour,
where, how big) rather than texture. The shape world's equivalent is this classifier: four heads
(shape 3, colour 6, position 3x3 cells, size 3 bins) on a shared trunk; its penultimate layer
(FEATURE_DIM-d, after ReLU) is the feature space of the demo's primary diversity table.

A classifier trained only on clean grey backgrounds reads every hacked image as "yellow"
(docs/design.md section 5), so training images get varied backgrounds (flat colours, gradients,
blotchy textures), tints, Gaussian noise and coloured speckle (the DRaFT hack is a yellow speckle plus
a background tint). The shipped weights were made with:

    OMP_NUM_THREADS=1 python -m comfy_aig.training.demo.featnet --steps 1500 --batch 64 \
        --out training/demo/feature_net.safetensors

They load with safetensors only (architecture in code, config and record in the file's metadata and in
feature_net.json beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...core.files import atomic_write, atomic_write_text
from .world import COLOUR_NAMES, COLOURS, IMAGE_SIZE, SHAPES, Scenes, _signed_distance, sample_scenes

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "feature_net.safetensors"
RECORD_NAME = "feature_net.json"
PACKAGE_DIR = Path(__file__).resolve().parent
FEATURE_DIM = 64
POSITION_CELLS = 3  # centre binned into a 3x3 grid
SIZE_BINS = 3  # radius binned into 3 equal ranges of the world's size/8..size/3
HEADS = {"shape": len(SHAPES), "colour": len(COLOUR_NAMES), "position": POSITION_CELLS**2, "size": SIZE_BINS}


class FeatureNet(nn.Module):
    """32x32 RGB in [0, 1] -> penultimate features [B, FEATURE_DIM] and logits of the four heads."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),  # 16x16
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.Conv2d(2 * width, width, 3, stride=2, padding=1), nn.ReLU(),  # 4x4
            nn.Flatten(),
            nn.Linear(width * 16, feature_dim), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, n) for name, n in HEADS.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, FEATURE_DIM] of images [B, 3, 32, 32] in [0, 1]."""
        if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
        return self.trunk(images * 2.0 - 1.0)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head, {name: [B, classes]}."""
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}


def load_feature_net(path: str | Path | None = None) -> FeatureNet:
    """The shipped (or given) feature net, eval mode, parameters frozen; loaded with safetensors only."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else PACKAGE_DIR / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"demo feature net {path} not found; train it with "
                                "`python -m comfy_aig.training.demo.featnet --out <file>`")
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    net = FeatureNet(**config)
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return net.eval().requires_grad_(False)


# -- labels and nuisances -------------------------------------------------------------------------

def scene_labels(scenes: Scenes, size: int = IMAGE_SIZE) -> dict[str, torch.Tensor]:
    """Class indices per head: shape, colour, position cell (row-major 3x3 of the centre), size bin."""
    cell = (scenes.centre / size * POSITION_CELLS).long().clamp(0, POSITION_CELLS - 1)
    low, high = size / 8, size / 3
    size_bin = ((scenes.radius - low) / (high - low) * SIZE_BINS).long().clamp(0, SIZE_BINS - 1)
    return {"shape": scenes.shape, "colour": scenes.colour, "position": cell[:, 1] * POSITION_CELLS + cell[:, 0],
            "size": size_bin}


def _rand(shape, generator, low=0.0, high=1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _backgrounds(batch: int, generator: torch.Generator, size: int) -> torch.Tensor:
    """Per image one of: the world's grey, a flat colour, a two-colour gradient, a blotchy texture -> [B, 3, H, W]."""
    kind = torch.randint(4, (batch,), generator=generator)
    grey = _rand((batch, 1, 1, 1), generator, 0.35, 0.65).expand(-1, 3, size, size)
    flat = _rand((batch, 3, 1, 1), generator).expand(-1, 3, size, size)
    ramp = torch.linspace(0, 1, size)
    angle = _rand((batch, 1, 1), generator, 0, 2 * math.pi)
    t = torch.cos(angle) * ramp[None, :, None] + torch.sin(angle) * ramp[None, None, :]  # [B, H, W]
    t = ((t - t.amin((1, 2), keepdim=True)) / (t.amax((1, 2), keepdim=True) - t.amin((1, 2), keepdim=True) + 1e-6))
    a, b = _rand((batch, 3, 1, 1), generator), _rand((batch, 3, 1, 1), generator)
    gradient = a + (b - a) * t[:, None]
    coarse = _rand((batch, 3, 4, 4), generator)
    blotchy = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    options = torch.stack([grey, flat, gradient, blotchy], dim=1)  # [B, 4, 3, H, W]
    return options[torch.arange(batch), kind]


def nuisance_batch(batch: int, generator: torch.Generator, size: int = IMAGE_SIZE,
                   clean_share: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """World scenes under nuisances: varied backgrounds, tints, noise and coloured speckle -> (images, labels).

    A share `clean_share` of the batch is the world as the base model sees it (grey background, no nuisance).
    """
    scenes = sample_scenes(batch, generator, size)
    coverage = torch.sigmoid(-2.0 * _signed_distance(scenes, size))[:, None]
    # the shape's colour jittered a little, so colour is a hue class rather than one exact RGB value
    palette = torch.tensor(list(COLOURS.values()))
    fill = (palette[scenes.colour] + _rand((batch, 3), generator, -0.08, 0.08)).clamp(0, 1)[:, :, None, None]
    background = _backgrounds(batch, generator, size)
    clean = torch.rand(batch, generator=generator) < clean_share
    world_grey = scenes.background[:, None, None, None].expand(-1, 3, size, size)
    background = torch.where(clean[:, None, None, None], world_grey, background)
    images = coverage * fill + (1 - coverage) * background
    # tint: blend towards a random colour (yellow-ish among them), strength 0..0.35
    tint = _rand((batch, 3, 1, 1), generator)
    strength = _rand((batch, 1, 1, 1), generator, 0.0, 0.35) * (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5)
    images = (1 - strength) * images + strength * tint
    # speckle: a random share (0..30%) of pixels set to one random colour, per image
    density = _rand((batch, 1, 1, 1), generator, 0.0, 0.3) * (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5)
    mask = (torch.rand(batch, 1, size, size, generator=generator) < density).float()
    speck = _rand((batch, 3, 1, 1), generator)
    images = (1 - mask) * images + mask * speck
    # Gaussian pixel noise, sigma 0..0.12
    sigma = _rand((batch, 1, 1, 1), generator, 0.0, 0.12)
    images = images + sigma * torch.randn(images.shape, generator=generator)
    keep = clean[:, None, None, None]
    images = torch.where(keep, coverage * fill + (1 - coverage) * world_grey, images).clamp(0, 1)
    return images, scene_labels(scenes, size)


# -- training -------------------------------------------------------------------------------------

def accuracies(net: FeatureNet, images: torch.Tensor, labels: dict[str, torch.Tensor], chunk: int = 256) -> dict:
    """Top-1 accuracy per head on a labelled set."""
    correct = {name: 0 for name in HEADS}
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            logits = net(images[i:i + chunk])
            for name in HEADS:
                correct[name] += int((logits[name].argmax(1) == labels[name][i:i + chunk]).sum())
    return {name: round(correct[name] / len(images), 4) for name in HEADS}


def held_out_sets(n: int, seed: int = 12345) -> dict[str, tuple[torch.Tensor, dict]]:
    """Held-out sets (a seed never used in training): the clean world, and the world under nuisances."""
    g = torch.Generator().manual_seed(seed)
    clean = nuisance_batch(n, g, clean_share=1.0)
    nuisance = nuisance_batch(n, g, clean_share=0.0)
    return {"clean": clean, "nuisance": nuisance}


def train(steps: int, batch: int, lr: float, seed: int, held_out: int = 2000) -> tuple[FeatureNet, dict]:
    """Train the four heads with summed cross-entropy (AdamW, cosine decay); returns (net, record)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = FeatureNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.time()
    for step in range(steps):
        images, labels = nuisance_batch(batch, g)
        logits = net(images)
        loss = sum(F.cross_entropy(logits[name], labels[name]) for name in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            logger.info("step %d/%d loss %.3f (%.0f s)", step + 1, steps, float(loss), time.time() - start)
    seconds = time.time() - start
    net.eval().requires_grad_(False)
    record = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "seconds": round(seconds, 1),
              "final_loss": round(float(loss), 4), "torch_threads": torch.get_num_threads(),
              "held_out_images": held_out, "held_out_seed": 12345,
              "held_out_accuracy": {name: accuracies(net, *data) for name, data in held_out_sets(held_out).items()},
              "parameters": sum(p.numel() for p in net.parameters())}
    return net, record


def save(net: FeatureNet, path: Path, record: dict) -> None:
    """Weights (float32 safetensors, config + record in metadata) and the JSON record beside them."""
    from safetensors.torch import save_file

    config = {"width": net.trunk[0].out_channels, "feature_dim": net.heads["shape"].in_features}
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    meta = {"config": json.dumps(config), "record": json.dumps(record)}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta), mode=0o644)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"config": config, "training": record}, indent=2) + "\n",
                      mode=0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors (JSON record goes beside)")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and init (default 0)")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out images per set (default 2000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    net, record = train(args.steps, args.batch, args.lr, args.seed, args.held_out)
    record["command"] = ("python -m comfy_aig.training.demo.featnet " + " ".join(argv or __import__("sys").argv[1:]))
    save(net, args.out, record)
    logger.info("saved %s: held-out accuracy %s", args.out, json.dumps(record["held_out_accuracy"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

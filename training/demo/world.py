"""The demo's toy world: 32x32 RGB scenes of one shape on a grey background, with short prompts.

Every scene has one shape (circle, square or triangle) in one of six hues, a random size and
position, on a grey background of random brightness. Prompts name the colour and the shape
("red circle"), or only one of them ("a circle", "a red shape"), or nothing (""), so open
prompts are multi-modal: "a circle" has six colour modes, "a red shape" three shape modes.
Images are float tensors [B, 3, H, W] in [0, 1]; rendering is batched torch, seeded by a
torch.Generator, so a seed gives the same scenes on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGE_SIZE = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "yellow": (0.9, 0.85, 0.1),
    "green": (0.1, 0.75, 0.15),
    "cyan": (0.1, 0.8, 0.85),
    "blue": (0.15, 0.2, 0.9),
    "magenta": (0.85, 0.15, 0.8),
}
COLOUR_NAMES = tuple(COLOURS)

# prompt form -> probability when training the base model ("" is also the CFG unconditional prompt)
PROMPT_FORMS = {"full": 0.5, "shape": 0.2, "colour": 0.2, "empty": 0.1}


@dataclass(frozen=True)
class Scenes:
    """A batch of scene parameters: indices into SHAPES / COLOUR_NAMES and geometry in pixels."""

    shape: torch.Tensor  # [B] long
    colour: torch.Tensor  # [B] long
    radius: torch.Tensor  # [B] float, pixels
    centre: torch.Tensor  # [B, 2] float, (x, y) pixels
    background: torch.Tensor  # [B] float grey level


def sample_scenes(batch: int, generator: torch.Generator, size: int = IMAGE_SIZE) -> Scenes:
    """Draw shape, colour, radius (size/8..size/3), centre (shape fully inside) and grey level."""
    shape = torch.randint(len(SHAPES), (batch,), generator=generator)
    colour = torch.randint(len(COLOUR_NAMES), (batch,), generator=generator)
    radius = size / 8 + torch.rand(batch, generator=generator) * (size / 3 - size / 8)
    low, span = radius + 1.0, size - 2 * (radius + 1.0)
    centre = low[:, None] + torch.rand(batch, 2, generator=generator) * span[:, None]
    background = 0.35 + 0.3 * torch.rand(batch, generator=generator)
    return Scenes(shape, colour, radius, centre, background)


def _signed_distance(scenes: Scenes, size: int) -> torch.Tensor:
    """Approximate signed distance (negative inside) of each pixel to its scene's shape -> [B, H, W]."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # [H, W]
    dx = x[None] - scenes.centre[:, 0, None, None]
    dy = y[None] - scenes.centre[:, 1, None, None]
    r = scenes.radius[:, None, None]
    circle = torch.sqrt(dx**2 + dy**2) - r
    square = torch.maximum(dx.abs(), dy.abs()) - 0.8 * r
    # upright isosceles triangle: apex at top (y = cy - r), base at y = cy + 0.8 r
    apex, base = -r, 0.8 * r
    height = base - apex
    half_width = (dy - apex) / height * r  # half width grows linearly from the apex
    side = (dx.abs() - half_width) * (height / torch.sqrt(height**2 + r**2))
    triangle = torch.maximum(torch.maximum(side, dy - base), apex - dy)
    stacked = torch.stack([circle, square, triangle], dim=1)  # [B, 3, H, W]
    return stacked.gather(1, scenes.shape[:, None, None, None].expand(-1, 1, size, size))[:, 0]


def render(scenes: Scenes, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Anti-aliased rendering of scenes -> images [B, 3, H, W] in [0, 1]."""
    coverage = torch.sigmoid(-2.0 * _signed_distance(scenes, size))[:, None]  # [B, 1, H, W]
    palette = torch.tensor(list(COLOURS.values()))  # [6, 3]
    fill = palette[scenes.colour][:, :, None, None]  # [B, 3, 1, 1]
    grey = scenes.background[:, None, None, None].expand(-1, 3, 1, 1)
    return coverage * fill + (1 - coverage) * grey


def scene_prompts(scenes: Scenes, generator: torch.Generator, forms: dict | None = None) -> list[str]:
    """One prompt per scene, its form drawn from `forms` (default PROMPT_FORMS)."""
    forms = forms or PROMPT_FORMS
    names = list(forms)
    weights = torch.tensor([forms[n] for n in names], dtype=torch.float32)
    picks = torch.multinomial(weights, len(scenes.shape), replacement=True, generator=generator)
    prompts = []
    for shape, colour, pick in zip(scenes.shape.tolist(), scenes.colour.tolist(), picks.tolist()):
        prompts.append(format_prompt(names[pick], COLOUR_NAMES[colour], SHAPES[shape]))
    return prompts


def format_prompt(form: str, colour: str, shape: str) -> str:
    """Text of one prompt form: full 'red circle', shape 'a circle', colour 'a red shape', empty ''."""
    if form == "full":
        return f"{colour} {shape}"
    if form == "shape":
        return f"a {shape}"
    if form == "colour":
        return f"a {colour} shape"
    if form == "empty":
        return ""
    raise ValueError(f"unknown prompt form '{form}'; valid forms: {', '.join(PROMPT_FORMS)}")


def training_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Images [B, 3, 32, 32] in [0, 1] and their prompts, for base-model training."""
    scenes = sample_scenes(batch, generator)
    return render(scenes), scene_prompts(scenes, generator)

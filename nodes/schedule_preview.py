"""AIGSchedulePreview: draws gamma(s) and the per-step weights of a sampling run as an IMAGE."""

import torch
from comfy_api.latest import io, ui
from PIL import Image, ImageDraw

from ..core.schedules import sample_curve, schedule_from_values
from .aig_inputs import WindowValidation, schedule_inputs

_SIZE = 256  # preview canvas, pixels
_MARGIN = 24


def _to_canvas(s: float, g: float) -> tuple[float, float]:
    span = _SIZE - 2 * _MARGIN
    return _MARGIN + s * span, _SIZE - _MARGIN - g * span


def render_schedule(schedule, steps: int) -> torch.Tensor:
    """Curve of gamma(s) with a dot at each step's progress i/steps; returns IMAGE [1, H, W, 3] in 0..1."""
    canvas = Image.new("RGB", (_SIZE, _SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([_to_canvas(0, 1), _to_canvas(1, 0)], outline=(160, 160, 160))
    draw.line([_to_canvas(s, g) for s, g in sample_curve(schedule, 201)], fill=(30, 90, 200), width=2)
    for i in range(steps):
        x, y = _to_canvas(i / steps, schedule(i / steps))
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(220, 60, 40))
    draw.text((_MARGIN, 4), schedule.describe(), fill=(0, 0, 0))
    draw.text((_MARGIN, _SIZE - _MARGIN + 6), "noise -> clean (progress s)", fill=(80, 80, 80))
    pixels = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)  # [H*W*3]
    return pixels.view(1, _SIZE, _SIZE, 3).float() / 255.0


class AIGSchedulePreview(WindowValidation, io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGSchedulePreview",
            display_name="AIG Schedule Preview",
            category="AIG/schedules",
            description="Plots the AIG weight gamma(s) of the tuned model over sampling progress, "
            "with a dot per sampling step.",
            inputs=[
                *schedule_inputs(),
                io.Int.Input(
                    "steps", default=20, min=1, max=1000,
                    tooltip="Sampling steps to mark on the curve (20 is a typical run).",
                ),
            ],
            outputs=[io.Image.Output(display_name="plot"), io.String.Output(display_name="weights")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, steps, **schedule_values) -> io.NodeOutput:
        schedule = schedule_from_values(schedule_values)
        weights = ", ".join(f"{schedule(i / steps):.3f}" for i in range(steps))
        image = render_schedule(schedule, steps)
        return io.NodeOutput(image, weights, ui=ui.PreviewText(f"{schedule.describe()}: {weights}"))


SCHEDULE_NODES = [AIGSchedulePreview]

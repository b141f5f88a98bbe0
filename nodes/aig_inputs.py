"""Inputs every AIG node shares, generated from core's vocabulary, and their /prompt-time validation.

The schedule inputs (family combo, every family's parameters, the window) come from
core/schedules.py (FAMILIES, PARAMETERS, WINDOW); the branch-skip tolerance from core/aig.py;
the LoRA route from nodes/tuned_model.py. Input names and defaults are public API: they are
saved in every workflow (tests/data/node_schema.json holds them).
"""

from __future__ import annotations

from comfy_api.latest import io

from ..core.aig import check_tolerance
from ..core.errors import AIGInputError
from ..core.schedules import (
    DEFAULT_SCHEDULE,
    PARAMETERS,
    SCHEDULE_HELP,
    SCHEDULE_NAMES,
    VALUE_NAMES,
    WINDOW,
    Parameter,
    schedule_from_values,
)
from .tuned_model import LORA_ROUTES, check_lora_route


def float_input(parameter: Parameter, optional: bool = False) -> io.Float.Input:
    """A FLOAT widget for one core Parameter (default, widget range, step and help from core)."""
    return io.Float.Input(parameter.name, default=parameter.default, min=parameter.minimum, max=parameter.high,
                          step=parameter.step, optional=optional, tooltip=parameter.help)


def schedule_inputs() -> list:
    """The family combo, every family's parameters (required) and the window (optional)."""
    family = io.Combo.Input("schedule", options=list(SCHEDULE_NAMES), default=DEFAULT_SCHEDULE, tooltip=SCHEDULE_HELP)
    return [family, *(float_input(p) for p in PARAMETERS.values()), *(float_input(p, optional=True) for p in WINDOW)]


def tolerance_input() -> io.Float.Input:
    return io.Float.Input(
        "skip_tolerance", default=0.0, min=0.0, max=0.49, step=0.001, optional=True,
        tooltip="Skip a branch whose weight is within this of 0 (and the other within it of 1). "
        "0 = exact: skip only where the weight is exactly 0 or 1.",
    )


def lora_route_input() -> io.Combo.Input:
    return io.Combo.Input(
        "lora_route", options=list(LORA_ROUTES), default="auto", optional=True,
        tooltip="How a LoRA tuned model runs. auto: unmerged when it is a plain LoRA (base and tuned in one "
        "batched forward, no weight copies; equal to the merged LoRA up to float rounding), else weight hooks. "
        "bypass: unmerged or an error. hooks: merged through weight hooks, bit-identical to LoraLoader. "
        "Not used for a separate checkpoint.",
    )


def check_values(values: dict) -> bool | str:
    """True, or the message of the first invalid widget: the schedule (when all its values are widgets),
    the tolerance and the route. Linked inputs arrive as None here and are checked when the node runs."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        if all(k in values for k in VALUE_NAMES):
            schedule_from_values(values)
        if "skip_tolerance" in values:
            check_tolerance(values["skip_tolerance"])
        if "lora_route" in values:
            check_lora_route(values["lora_route"])
    except AIGInputError as error:
        return str(error)
    return True


class AIGInputValidation:
    """validate_inputs of the AIG nodes: the shared widgets are checked at /prompt time."""

    @classmethod
    def validate_inputs(cls, schedule=None, p=None, switch=None, centre=None, width=None, value=None,
                        window_start=None, window_end=None, skip_tolerance=None, lora_route=None):
        # ComfyUI reads these names from the signature: a failure is attached to them only, and ComfyUI keeps
        # its own min/max checks for every other input (tests/test_guider_server.py checks the names against
        # core's VALUE_NAMES); a node without an input simply does not pass it
        return check_values(dict(schedule=schedule, p=p, switch=switch, centre=centre, width=width, value=value,
                                 window_start=window_start, window_end=window_end,
                                 skip_tolerance=skip_tolerance, lora_route=lora_route))

"""Inputs every AIG node shares, generated from core's vocabulary, and their /prompt-time validation.

The schedule inputs (family combo, every family's parameters, the window) come from
core/schedules.py (FAMILIES, PARAMETERS, WINDOW); the branch-skip tolerance from core/aig.py;
the LoRA route from nodes/tuned_model.py. Input names and defaults are public API: they are
saved in every workflow (tests/data/node_schema.json holds them).

Validation at /prompt, one message per problem on its input: ComfyUI itself checks every number
against its widget's min/max and every combo against its list (ListedCombo). validate_inputs is
left with what spans inputs (the window's order on the preview node; exactly one tuned model in
nodes/guider.py), with as few arguments as possible, because ComfyUI repeats a validate_inputs
failure once for each of that function's arguments.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..core.errors import AIGInputError
from ..core.schedules import (
    DEFAULT_SCHEDULE,
    PARAMETERS,
    SCHEDULE_HELP,
    SCHEDULE_NAMES,
    WINDOW,
    Parameter,
    check_window,
)
from .combos import ListedCombo
from .tuned_model import LORA_ROUTES


def float_input(parameter: Parameter, optional: bool = False) -> io.Float.Input:
    """A FLOAT widget for one core Parameter (default, widget range, step and help from core)."""
    return io.Float.Input(parameter.name, default=parameter.default, min=parameter.minimum, max=parameter.high,
                          step=parameter.step, optional=optional, tooltip=parameter.help)


def schedule_inputs() -> list:
    """The family combo, every family's parameters (required) and the window (optional)."""
    family = ListedCombo("schedule", options=list(SCHEDULE_NAMES), default=DEFAULT_SCHEDULE, tooltip=SCHEDULE_HELP)
    return [family, *(float_input(p) for p in PARAMETERS.values()), *(float_input(p, optional=True) for p in WINDOW)]


def tolerance_input() -> io.Float.Input:
    return io.Float.Input(
        "skip_tolerance", default=0.0, min=0.0, max=0.49, step=0.001, optional=True,
        tooltip="Skip a branch whose weight is within this of 0 (and the other within it of 1). "
        "0 = exact: skip only where the weight is exactly 0 or 1.",
    )


def lora_route_input() -> ListedCombo:
    return ListedCombo(
        "lora_route", options=list(LORA_ROUTES), default="auto", optional=True,
        tooltip="How a LoRA tuned model runs. auto: unmerged when it is a plain LoRA (base and tuned in one "
        "batched forward, no weight copies; equal to the merged LoRA up to float rounding), else weight hooks. "
        "bypass: unmerged or an error. hooks: merged through weight hooks, bit-identical to LoraLoader. "
        "Not used for a separate checkpoint.",
    )


def window_problem(window_start, window_end) -> str | None:
    """The message when start is not below end (linked ends, None here, are checked at run time); each
    end's own range is ComfyUI's min/max check."""
    if window_start is None or window_end is None:
        return None
    try:
        check_window(window_start, window_end)
    except AIGInputError as error:
        return str(error)
    return None


class WindowValidation:
    """validate_inputs of a node with the schedule inputs: the window's order, on the two inputs it concerns."""

    @classmethod
    def validate_inputs(cls, window_start=0.0, window_end=1.0):
        return window_problem(window_start, window_end) or True

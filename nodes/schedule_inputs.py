"""Shared schedule inputs for AIG nodes: one combo plus every family's parameters and a window."""

from comfy_api.latest import io

from ..core.schedules import DEFAULT_PARAMETERS, SCHEDULE_NAMES, schedule_from_inputs


def schedule_inputs() -> list:
    """Inputs that describe gamma(s); each tooltip names its neutral value."""
    return [
        io.Combo.Input(
            "schedule", options=list(SCHEDULE_NAMES), default="power",
            tooltip="Family of gamma(s): weight of the tuned model at sampling progress s "
            "(0 = pure noise, 1 = clean). 'power' is the paper's s^p.",
        ),
        io.Float.Input(
            "p", default=DEFAULT_PARAMETERS["p"], min=0.01, max=100.0, step=0.05,
            tooltip="power: gamma = s^p. Larger p keeps the base model longer (more diversity, less reward). "
            "p near 0 is the tuned model.",
        ),
        io.Float.Input(
            "switch", default=DEFAULT_PARAMETERS["switch"], min=0.0, max=1.0, step=0.01,
            tooltip="step: progress at which sampling switches from base to tuned. 0 = tuned only, 1 = base only.",
        ),
        io.Float.Input(
            "centre", default=DEFAULT_PARAMETERS["centre"], min=0.0, max=1.0, step=0.01,
            tooltip="sigmoid: progress at the middle of the transition (0.5 is neutral).",
        ),
        io.Float.Input(
            "width", default=DEFAULT_PARAMETERS["width"], min=0.001, max=10.0, step=0.01,
            tooltip="sigmoid: transition width; large widths approach linear (0.1 is the default).",
        ),
        io.Float.Input(
            "value", default=DEFAULT_PARAMETERS["value"], min=0.0, max=1.0, step=0.01,
            tooltip="constant: fixed tuned-model weight. 1 = tuned only, 0 = base only.",
        ),
        io.Float.Input(
            "window_start", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
            tooltip="Progress where the transition starts; before it only the base model runs. 0 = no window.",
        ),
        io.Float.Input(
            "window_end", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
            tooltip="Progress where the transition ends; after it only the tuned model runs. 1 = no window.",
        ),
    ]


def schedule_from_kwargs(
    schedule="power",
    p=DEFAULT_PARAMETERS["p"],
    switch=DEFAULT_PARAMETERS["switch"],
    centre=DEFAULT_PARAMETERS["centre"],
    width=DEFAULT_PARAMETERS["width"],
    value=DEFAULT_PARAMETERS["value"],
    window_start=0.0,
    window_end=1.0,
):
    """Validated core Schedule from the node inputs above (raises ScheduleError with the valid ranges)."""
    return schedule_from_inputs(
        schedule, start=window_start, end=window_end,
        p=p, switch=switch, centre=centre, width=width, value=value,
    )

"""AIG weight schedules gamma(s) (Jena et al. 2024, Sec. 4: eps = (1 - g) eps_base + g eps_tuned).

Progress s runs over [0, 1]: 0 is pure noise, 1 is the clean image. Every family is
monotone non-decreasing, gamma(0) = 0 and gamma(1) = 1 where the family has them, so the
first step follows the base model (diversity) and the last the tuned model (reward).
An optional window [start, end] compresses the transition: gamma = 0 before it,
1 after it, and the family rescaled inside it (the cost-aware variant: outside the
window only one model runs).

This module is the one vocabulary of schedules: FAMILIES (name, curve, parameters with
defaults, ranges and help) and WINDOW. The ComfyUI inputs and their validation
(nodes/aig_inputs.py), the preview node and the `comfy-aig schedule` / `sample` flags
are all generated from it; flat values in that vocabulary become a Schedule through
`schedule_from_values`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import AIGInputError


class ScheduleError(AIGInputError):
    """A schedule name or parameter is invalid; the message names the valid choices."""


@dataclass(frozen=True)
class Parameter:
    """One schedule input: its default, valid range (low open or closed, high closed), UI step and help."""

    name: str
    default: float
    low: float
    high: float
    low_inclusive: bool = True
    step: float = 0.01
    widget_min: float | None = None  # smallest widget value where the range is open at `low`
    help: str = ""

    @property
    def minimum(self) -> float:
        """The smallest value a widget offers."""
        return self.low if self.widget_min is None else self.widget_min

    def check(self, owner: str, value) -> float:
        """value itself, or ScheduleError naming the valid range."""
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise ScheduleError(f"schedule '{owner}': {self.name} must be a number, got {value!r}")
        low_ok = value >= self.low if self.low_inclusive else value > self.low
        if not (low_ok and value <= self.high):
            bracket = "[" if self.low_inclusive else "("
            raise ScheduleError(
                f"schedule '{owner}': {self.name} = {value} is out of range; valid range is "
                f"{bracket}{self.low}, {self.high}]"
            )
        return value


def _power(u: float, p: dict) -> float:
    """gamma = u^p (the paper's schedule)."""
    return u ** p["p"]


def _linear(u: float, p: dict) -> float:
    """gamma = u."""
    return u


def _step(u: float, p: dict) -> float:
    """gamma = 1 from u = switch on, else 0."""
    return 1.0 if u >= p["switch"] else 0.0


def _sigmoid(u: float, p: dict) -> float:
    """Logistic curve rescaled so that gamma(0) = 0 and gamma(1) = 1 exactly."""

    def logistic(x):
        return 1.0 / (1.0 + math.exp(-(x - p["centre"]) / p["width"]))

    low, high = logistic(0.0), logistic(1.0)
    return (logistic(u) - low) / (high - low)


def _cosine(u: float, p: dict) -> float:
    """gamma = (1 - cos(pi u)) / 2."""
    return 0.5 * (1.0 - math.cos(math.pi * u))


def _constant(u: float, p: dict) -> float:
    """gamma = value at every step."""
    return p["value"]


@dataclass(frozen=True)
class Family:
    """A schedule family: its curve gamma(u, params) on u in [0, 1] and its own parameters."""

    name: str
    curve: Callable[[float, dict], float]
    parameters: tuple[Parameter, ...] = ()

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)


FAMILIES = {family.name: family for family in (
    Family("power", _power, (Parameter(
        "p", 2.0, 0.0, 100.0, low_inclusive=False, step=0.05, widget_min=0.01,
        help="power: gamma = s^p. Larger p keeps the base model longer (more diversity, less reward). "
        "p near 0 is the tuned model."),)),
    Family("linear", _linear),
    Family("step", _step, (Parameter(
        "switch", 0.5, 0.0, 1.0,
        help="step: progress at which sampling switches from base to tuned. 0 = tuned only, 1 = base only."),)),
    Family("sigmoid", _sigmoid, (
        Parameter("centre", 0.5, 0.0, 1.0, help="sigmoid: progress at the middle of the transition (0.5 is neutral)."),
        Parameter("width", 0.1, 0.0, 10.0, low_inclusive=False, widget_min=0.001,
                  help="sigmoid: transition width; large widths approach linear (0.1 is the default)."))),
    Family("cosine", _cosine),
    Family("constant", _constant, (Parameter(
        "value", 1.0, 0.0, 1.0, help="constant: fixed tuned-model weight. 1 = tuned only, 0 = base only."),)),
)}
SCHEDULE_NAMES = tuple(FAMILIES)
DEFAULT_SCHEDULE = "power"
SCHEDULE_HELP = ("Family of gamma(s): weight of the tuned model at sampling progress s (0 = pure noise, 1 = clean). "
                 "'power' is the paper's s^p.")
PARAMETERS = {p.name: p for family in FAMILIES.values() for p in family.parameters}  # the flat input set
WINDOW = (
    Parameter("window_start", 0.0, 0.0, 1.0,
              help="Progress where the transition starts; before it only the base model runs. 0 = no window."),
    Parameter("window_end", 1.0, 0.0, 1.0,
              help="Progress where the transition ends; after it only the tuned model runs. 1 = no window."),
)
VALUE_NAMES = ("schedule", *PARAMETERS, *(p.name for p in WINDOW))  # every flat input, in UI order


def _family(name: str) -> Family:
    """The family of a name, or ScheduleError listing the valid ones."""
    if name not in FAMILIES:
        raise ScheduleError(f"unknown schedule '{name}'; valid choices: {', '.join(SCHEDULE_NAMES)}")
    return FAMILIES[name]


def check_window(start: float, end: float) -> None:
    """ScheduleError unless both ends lie in WINDOW's range and start < end."""
    for label, value, bound in (("start", start, WINDOW[0]), ("end", end, WINDOW[1])):
        if not (bound.low <= value <= bound.high):
            raise ScheduleError(f"window {label} = {value} is out of range; valid range is [{bound.low:g}, {bound.high:g}]")
    if start >= end:
        raise ScheduleError(f"window start ({start}) must be below window end ({end}); use start=0, end=1 for no window")


@dataclass(frozen=True)
class Schedule:
    """gamma(s) for one family with its parameters and an optional window [start, end]."""

    name: str = "power"
    params: dict = field(default_factory=dict)
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        family = _family(self.name)
        unknown = sorted(set(self.params) - set(family.parameter_names))
        if unknown:
            valid = ", ".join(family.parameter_names) or "none"
            raise ScheduleError(f"schedule '{self.name}' has no parameter {unknown}; valid parameters: {valid}")
        full = {p.name: p.check(self.name, self.params.get(p.name, p.default)) for p in family.parameters}
        object.__setattr__(self, "params", full)
        check_window(self.start, self.end)

    def __call__(self, s: float) -> float:
        """gamma(s) in [0, 1] for progress s in [0, 1] (clamped)."""
        s = min(max(float(s), 0.0), 1.0)
        if s < self.start:
            return 0.0
        if s > self.end:
            return 1.0
        u = (s - self.start) / (self.end - self.start)
        return min(max(FAMILIES[self.name].curve(u, self.params), 0.0), 1.0)

    def describe(self) -> str:
        """Readable one-line form, e.g. 'power(p=2)' or 'linear window [0.4, 0.6]'."""
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        text = f"{self.name}({args})" if args else self.name
        if (self.start, self.end) != (0.0, 1.0):
            text += f" window [{self.start:g}, {self.end:g}]"
        return text


def make_schedule(name: str = DEFAULT_SCHEDULE, start: float = 0.0, end: float = 1.0, **params) -> Schedule:
    """Build a validated schedule, e.g. make_schedule('power', p=3); unknown parameters are an error."""
    return Schedule(name=name, params=params, start=start, end=end)


def schedule_from_values(values: Mapping) -> Schedule:
    """Schedule from flat values named as in VALUE_NAMES (node inputs, CLI flags); absent ones take their
    defaults and only the chosen family's own parameters are used."""
    name = values.get("schedule", DEFAULT_SCHEDULE)
    family = _family(name)
    own = {p: values[p] for p in family.parameter_names if p in values}
    start, end = (values.get(p.name, p.default) for p in WINDOW)
    return Schedule(name=name, params=own, start=start, end=end)


def sample_curve(schedule: Schedule, points: int = 101) -> list[tuple[float, float]]:
    """(s, gamma(s)) at evenly spaced progress values, for plots and previews."""
    if points < 2:
        raise ScheduleError(f"points must be at least 2, got {points}")
    return [(i / (points - 1), schedule(i / (points - 1))) for i in range(points)]

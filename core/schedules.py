"""AIG weight schedules gamma(s) (Jena et al. 2024, Sec. 4: eps = (1 - g) eps_base + g eps_tuned).

Progress s runs over [0, 1]: 0 is pure noise, 1 is the clean image. Every family is
monotone non-decreasing, gamma(0) = 0 and gamma(1) = 1 where the family has them, so the
first step follows the base model (diversity) and the last the tuned model (reward).
An optional window [start, end] compresses the transition: gamma = 0 before it,
1 after it, and the family rescaled inside it (the cost-aware variant: outside the
window only one model runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import AIGInputError

SCHEDULE_NAMES = ("power", "linear", "step", "sigmoid", "cosine", "constant")

# family -> {parameter: (low, high, low_inclusive)} for validation and UI ranges
PARAMETER_RANGES = {
    "power": {"p": (0.0, 100.0, False)},
    "linear": {},
    "step": {"switch": (0.0, 1.0, True)},
    "sigmoid": {"centre": (0.0, 1.0, True), "width": (0.0, 10.0, False)},
    "cosine": {},
    "constant": {"value": (0.0, 1.0, True)},
}

DEFAULT_PARAMETERS = {"p": 2.0, "switch": 0.5, "centre": 0.5, "width": 0.1, "value": 1.0}


class ScheduleError(AIGInputError):
    """A schedule name or parameter is invalid; the message names the valid choices."""


def _check_range(family: str, name: str, value: float) -> None:
    low, high, low_inclusive = PARAMETER_RANGES[family][name]
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ScheduleError(f"schedule '{family}': {name} must be a number, got {value!r}")
    low_ok = value >= low if low_inclusive else value > low
    if not (low_ok and value <= high):
        bracket = "[" if low_inclusive else "("
        raise ScheduleError(
            f"schedule '{family}': {name} = {value} is out of range; valid range is {bracket}{low}, {high}]"
        )


@dataclass(frozen=True)
class Schedule:
    """gamma(s) for one family with its parameters and an optional window [start, end]."""

    name: str = "power"
    params: dict = field(default_factory=dict)
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if self.name not in SCHEDULE_NAMES:
            raise ScheduleError(f"unknown schedule '{self.name}'; valid choices: {', '.join(SCHEDULE_NAMES)}")
        allowed = PARAMETER_RANGES[self.name]
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) or "none"
            raise ScheduleError(f"schedule '{self.name}' has no parameter {unknown}; valid parameters: {valid}")
        full = {k: DEFAULT_PARAMETERS[k] for k in allowed} | dict(self.params)
        for key, value in full.items():
            _check_range(self.name, key, value)
        object.__setattr__(self, "params", full)
        for label, value in (("start", self.start), ("end", self.end)):
            if not (0.0 <= value <= 1.0):
                raise ScheduleError(f"window {label} = {value} is out of range; valid range is [0, 1]")
        if self.start >= self.end:
            raise ScheduleError(
                f"window start ({self.start}) must be below window end ({self.end}); "
                "use start=0, end=1 for no window"
            )

    def __call__(self, s: float) -> float:
        """gamma(s) in [0, 1] for progress s in [0, 1] (clamped)."""
        s = min(max(float(s), 0.0), 1.0)
        if s < self.start:
            return 0.0
        if s > self.end:
            return 1.0
        u = (s - self.start) / (self.end - self.start)
        return min(max(_FAMILIES[self.name](u, self.params), 0.0), 1.0)

    def describe(self) -> str:
        """Readable one-line form, e.g. 'power(p=2)' or 'linear window [0.4, 0.6]'."""
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        text = f"{self.name}({args})" if args else self.name
        if (self.start, self.end) != (0.0, 1.0):
            text += f" window [{self.start:g}, {self.end:g}]"
        return text


def _power(u: float, p: dict) -> float:
    return u ** p["p"]


def _linear(u: float, p: dict) -> float:
    return u


def _step(u: float, p: dict) -> float:
    return 1.0 if u >= p["switch"] else 0.0


def _sigmoid(u: float, p: dict) -> float:
    """Logistic curve rescaled so that gamma(0) = 0 and gamma(1) = 1 exactly."""

    def logistic(x):
        return 1.0 / (1.0 + math.exp(-(x - p["centre"]) / p["width"]))

    low, high = logistic(0.0), logistic(1.0)
    return (logistic(u) - low) / (high - low)


def _cosine(u: float, p: dict) -> float:
    return 0.5 * (1.0 - math.cos(math.pi * u))


def _constant(u: float, p: dict) -> float:
    return p["value"]


_FAMILIES = {
    "power": _power,
    "linear": _linear,
    "step": _step,
    "sigmoid": _sigmoid,
    "cosine": _cosine,
    "constant": _constant,
}


def make_schedule(name: str = "power", start: float = 0.0, end: float = 1.0, **params) -> Schedule:
    """Build a validated schedule, e.g. make_schedule('power', p=3)."""
    return Schedule(name=name, params=params, start=start, end=end)


def schedule_from_inputs(name: str, start: float = 0.0, end: float = 1.0, **values) -> Schedule:
    """Build a schedule from a flat set of UI values, keeping only the family's own parameters."""
    if name not in SCHEDULE_NAMES:
        raise ScheduleError(f"unknown schedule '{name}'; valid choices: {', '.join(SCHEDULE_NAMES)}")
    own = {k: v for k, v in values.items() if k in PARAMETER_RANGES[name]}
    return Schedule(name=name, params=own, start=start, end=end)


def sample_curve(schedule: Schedule, points: int = 101) -> list[tuple[float, float]]:
    """(s, gamma(s)) at evenly spaced progress values, for plots and previews."""
    if points < 2:
        raise ScheduleError(f"points must be at least 2, got {points}")
    return [(i / (points - 1), schedule(i / (points - 1))) for i in range(points)]

"""AIG mixing math (Jena et al. 2024, Sec. 4): eps = (1 - g) * eps_base + g * eps_tuned, g = gamma(s).

Pure torch, no ComfyUI: the ComfyUI guider (nodes/guider.py) and the standalone DDIM sampler
(training/sampling.py) both take progress, weights, the branch plan and the mix from here.
Progress s runs over [0, 1] (0 = pure noise, 1 = clean) and is computed from the noise
level of each model call, never from a step counter, so samplers that evaluate the model
between schedule points (Heun, DPM++ 2S/SDE) get the right weight. Each model family maps its
own noise parameterisation to s, the inverse of ComfyUI's percent_to_sigma (docs/design.md
section 1): TimestepProgress (discrete eps/v), FlowProgress (SD3 shift), FluxProgress (Flux mu).
Mixing denoised x0, eps or the score at the same x_t and sigma is the same linear map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import AIGInputError
from .schedules import Schedule


class AIGError(AIGInputError):
    """An AIG input is invalid; the message names the problem and the fix."""


def progress_from_timestep(t: float, t_max: float, t_min: float = 0.0) -> float:
    """s = 1 - (t - t_min) / (t_max - t_min), clamped to [0, 1]: 0 at the noisiest timestep, 1 at t_min."""
    if not t_max > t_min:
        raise AIGError(f"timestep range is empty: t_max ({t_max}) must be above t_min ({t_min})")
    t = float(t)
    if math.isnan(t):
        raise AIGError("timestep is NaN; the sampler passed an invalid noise level")
    return min(max(1.0 - (t - t_min) / (t_max - t_min), 0.0), 1.0)


def _checked_sigma(sigma: float) -> float:
    """sigma as a float in [0, 1] (flow models), or AIGError for NaN."""
    sigma = float(sigma)
    if math.isnan(sigma):
        raise AIGError("sigma is NaN; the sampler passed an invalid noise level")
    return min(max(sigma, 0.0), 1.0)


@dataclass(frozen=True)
class TimestepProgress:
    """Discrete eps/v models (SD1.x, SD2.x, SDXL): s from the model's timestep t(sigma) in [t_min, t_max]."""

    t_max: float
    t_min: float = 0.0

    def __post_init__(self):
        progress_from_timestep(self.t_max, self.t_max, self.t_min)  # validates the range

    def __call__(self, t: float) -> float:
        return progress_from_timestep(t, self.t_max, self.t_min)


@dataclass(frozen=True)
class FlowProgress:
    """Rectified flow with a time shift (SD3.x): sigma = a u / (1 + (a - 1) u), s = 1 - u, u = sigma / (a - (a - 1) sigma)."""

    shift: float = 1.0

    def __call__(self, sigma: float) -> float:
        sigma = _checked_sigma(sigma)
        return 1.0 - sigma / (self.shift - (self.shift - 1.0) * sigma)


@dataclass(frozen=True)
class FluxProgress:
    """Flux's time shift mu: sigma = e^mu / (e^mu + 1/u - 1), s = 1 - u, u = 1 / (1 + e^mu (1/sigma - 1))."""

    shift: float = 1.15

    def __call__(self, sigma: float) -> float:
        sigma = _checked_sigma(sigma)
        if sigma == 0.0:
            return 1.0
        return 1.0 - 1.0 / (1.0 + math.exp(self.shift) * (1.0 / sigma - 1.0))


def check_tolerance(tolerance: float) -> float:
    """Skip tolerance must lie in [0, 0.5): a branch whose weight is within it of 0 is not run."""
    tolerance = float(tolerance)
    if math.isnan(tolerance) or not (0.0 <= tolerance < 0.5):
        raise AIGError(f"skip tolerance = {tolerance} is out of range; use a value in [0, 0.5) (0 = exact)")
    return tolerance


def snap_weight(g: float, tolerance: float = 0.0) -> float:
    """Weight after branch skipping: 0 if g <= tol, 1 if g >= 1 - tol, else g (tol = 0 snaps only exact 0/1)."""
    g = min(max(float(g), 0.0), 1.0)
    if g <= tolerance:
        return 0.0
    if g >= 1.0 - tolerance:
        return 1.0
    return g


@dataclass(frozen=True)
class BranchPlan:
    """Which branches one model call must run, and the per-sample tuned weights [B] after snapping."""

    weights: tuple[float, ...]

    @property
    def run_base(self) -> bool:
        return any(w < 1.0 for w in self.weights)

    @property
    def run_tuned(self) -> bool:
        return any(w > 0.0 for w in self.weights)

    @property
    def uniform(self) -> float | None:
        """The common weight when every sample has the same one, else None."""
        first = self.weights[0]
        return first if all(w == first for w in self.weights) else None


def plan_branches(weights, tolerance: float = 0.0) -> BranchPlan:
    """Snap each sample's weight and decide which of the two branches has to be evaluated."""
    tolerance = check_tolerance(tolerance)
    snapped = tuple(snap_weight(g, tolerance) for g in weights)
    if not snapped:
        raise AIGError("no weights given: the batch is empty")
    return BranchPlan(snapped)


def mix_predictions(base: torch.Tensor | None, tuned: torch.Tensor | None, plan: BranchPlan) -> torch.Tensor:
    """(1 - g) * base + g * tuned per sample ([B, ...] tensors); a skipped branch may be None."""
    g = plan.uniform
    if g == 0.0:
        return base
    if g == 1.0:
        return tuned
    if base is None or tuned is None:
        raise AIGError("both branches are needed for a mixed step but one was not evaluated")
    if g is not None:
        return (1.0 - g) * base + g * tuned
    w = torch.tensor(plan.weights, dtype=base.dtype, device=base.device)
    w = w.view(-1, *([1] * (base.ndim - 1)))  # [B, 1, 1, 1]
    mixed = (1.0 - w) * base + w * tuned
    # keep skipped samples bit-exact
    pure_base = (w == 0.0).expand_as(base)
    pure_tuned = (w == 1.0).expand_as(base)
    return torch.where(pure_base, base, torch.where(pure_tuned, tuned, mixed))


class AIGWeighting:
    """gamma(progress(v)) for every sample of a model call, with branch skipping (the guider's brain).

    progress maps the noise coordinate v the caller passes (a timestep for TimestepProgress, sigma for the
    flow maps) to s in [0, 1], so that s is the same part of the trajectory in every model family."""

    def __init__(self, schedule: Schedule, progress, tolerance: float = 0.0):
        if not isinstance(schedule, Schedule):
            raise AIGError(f"schedule must be a core.schedules.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.progress = progress
        self.tolerance = check_tolerance(tolerance)

    def weight(self, v: float) -> float:
        """g = gamma(s(v)) before snapping."""
        return self.schedule(self.progress(v))

    def plan(self, values) -> BranchPlan:
        """Plan for one model call; values: one noise coordinate per sample (list or 1-D tensor)."""
        if isinstance(values, torch.Tensor):
            values = values.reshape(-1).tolist()
        return plan_branches([self.weight(v) for v in values], self.tolerance)

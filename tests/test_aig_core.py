"""Unit tests of comfy_aig.core.aig: mixing, progress and branch skipping (no ComfyUI needed)."""

import math

import pytest
import torch

from comfy_aig.core.aig import (
    AIGError,
    AIGWeighting,
    FlowProgress,
    FluxProgress,
    TimestepProgress,
    mix_predictions,
    plan_branches,
    progress_from_timestep,
    snap_weight,
)
from comfy_aig.core.schedules import make_schedule


def _pair(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=gen), torch.randn(batch, 4, 8, 8, generator=gen)


def test_progress_endpoints_and_clamp():
    assert progress_from_timestep(999.0, 999.0) == 0.0
    assert progress_from_timestep(0.0, 999.0) == 1.0
    assert progress_from_timestep(499.5, 999.0) == pytest.approx(0.5)
    assert progress_from_timestep(1200.0, 999.0) == 0.0  # above the schedule (some SDE samplers)
    assert progress_from_timestep(-3.0, 999.0) == 1.0
    assert progress_from_timestep(0.5, 1.0, 0.0) == pytest.approx(0.5)  # flow models: t = sigma


def test_progress_rejects_bad_ranges():
    with pytest.raises(AIGError, match="t_max"):
        progress_from_timestep(1.0, 0.0, 0.0)
    with pytest.raises(AIGError, match="NaN"):
        progress_from_timestep(float("nan"), 999.0)


def test_mix_is_the_paper_equation():
    base, tuned = _pair()
    plan = plan_branches([0.3, 0.3])
    expected = 0.7 * base + 0.3 * tuned
    torch.testing.assert_close(mix_predictions(base, tuned, plan), expected, rtol=0, atol=0)


def test_mix_endpoints_return_branches_bit_exact():
    base, tuned = _pair()
    assert mix_predictions(base, None, plan_branches([0.0, 0.0])) is base
    assert mix_predictions(None, tuned, plan_branches([1.0, 1.0])) is tuned


def test_mix_per_sample_weights():
    base, tuned = _pair(batch=3)
    plan = plan_branches([0.0, 0.25, 1.0])
    out = mix_predictions(base, tuned, plan)
    assert torch.equal(out[0], base[0])
    assert torch.equal(out[2], tuned[2])
    torch.testing.assert_close(out[1], 0.75 * base[1] + 0.25 * tuned[1])


def test_mixed_step_needs_both_branches():
    base, _ = _pair()
    with pytest.raises(AIGError, match="both branches"):
        mix_predictions(base, None, plan_branches([0.5, 0.5]))


def test_mixing_x0_equals_mixing_eps():
    """At the same x and sigma, eps = (x - x0) / sigma is affine in x0, so both mixes agree."""
    base, tuned = _pair()
    x = torch.randn_like(base)
    sigma, g = 3.7, 0.42
    plan = plan_branches([g, g])
    eps_mix = mix_predictions((x - base) / sigma, (x - tuned) / sigma, plan)
    x0_mix = mix_predictions(base, tuned, plan)
    torch.testing.assert_close((x - x0_mix) / sigma, eps_mix, rtol=1e-5, atol=1e-6)


def test_branch_plan_skips_exact_endpoints_only_by_default():
    assert plan_branches([0.0]).run_tuned is False
    assert plan_branches([0.0]).run_base is True
    assert plan_branches([1.0]).run_base is False
    tiny = plan_branches([1e-9])
    assert tiny.run_base and tiny.run_tuned
    assert plan_branches([0.0, 1.0]).run_base and plan_branches([0.0, 1.0]).run_tuned


def test_tolerance_snaps_small_weights():
    assert snap_weight(0.01, 0.05) == 0.0
    assert snap_weight(0.97, 0.05) == 1.0
    assert snap_weight(0.5, 0.05) == 0.5
    plan = plan_branches([0.02, 0.03], tolerance=0.05)
    assert not plan.run_tuned and plan.uniform == 0.0


@pytest.mark.parametrize("bad", [-0.1, 0.5, 2.0, float("nan")])
def test_tolerance_out_of_range(bad):
    with pytest.raises(AIGError, match="tolerance"):
        plan_branches([0.5], tolerance=bad)


def test_weighting_follows_power_schedule_of_sigma_progress():
    weighting = AIGWeighting(make_schedule("power", p=2.0), TimestepProgress(999.0))
    for t in [999.0, 800.0, 500.0, 123.0, 0.0]:
        s = 1.0 - t / 999.0
        assert weighting.weight(t) == pytest.approx(s**2, abs=1e-12)
    plan = weighting.plan(torch.tensor([999.0, 999.0]))
    assert plan.uniform == 0.0 and not plan.run_tuned  # first step of a power schedule: pure base


def test_weighting_window_runs_one_branch_outside():
    weighting = AIGWeighting(make_schedule("linear", start=0.4, end=0.6), TimestepProgress(1000.0))
    assert weighting.plan([900.0]).uniform == 0.0  # s = 0.1, before the window
    assert weighting.plan([100.0]).uniform == 1.0  # s = 0.9, after it
    inside = weighting.plan([500.0]).uniform
    assert 0.0 < inside < 1.0 and math.isclose(inside, 0.5)


def test_weighting_rejects_non_schedule():
    with pytest.raises(AIGError, match="Schedule"):
        AIGWeighting("power", TimestepProgress(999.0))


@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_flow_progress_inverts_the_time_shift(shift):
    """SD3: sigma = a u / (1 + (a - 1) u) at u = 1 - s; the map returns s (ends exact)."""
    progress = FlowProgress(shift)
    assert progress(1.0) == 0.0 and progress(0.0) == 1.0
    for s in [0.1, 0.25, 0.5, 0.9]:
        u = 1.0 - s
        assert progress(shift * u / (1 + (shift - 1) * u)) == pytest.approx(s, abs=1e-12)


@pytest.mark.parametrize("mu", [0.5, 1.15, 3.0])
def test_flux_progress_inverts_the_time_shift(mu):
    """Flux: sigma = e^mu / (e^mu + 1/u - 1) at u = 1 - s; the map returns s (ends exact)."""
    progress = FluxProgress(mu)
    assert progress(1.0) == 0.0 and progress(0.0) == 1.0
    for s in [0.1, 0.25, 0.5, 0.9]:
        u = 1.0 - s
        assert progress(math.exp(mu) / (math.exp(mu) + (1 / u - 1))) == pytest.approx(s, abs=1e-12)


def test_shifted_progress_is_monotone_and_rejects_nan():
    for progress in (FlowProgress(3.0), FluxProgress(1.15), TimestepProgress(999.0)):
        grid = [i / 50 for i in range(51)] if not isinstance(progress, TimestepProgress) else range(0, 1000, 20)
        values = [progress(v) for v in grid]
        assert all(b <= a for a, b in zip(values, values[1:]))  # more noise, less progress
        with pytest.raises(AIGError, match="NaN"):
            progress(float("nan"))
    with pytest.raises(AIGError, match="timestep range"):
        TimestepProgress(0.0)

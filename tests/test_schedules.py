"""core.schedules: gamma(s) families, window, and validation errors."""

import math

import pytest

from comfy_aig.core.schedules import (
    SCHEDULE_NAMES,
    ScheduleError,
    make_schedule,
    sample_curve,
    schedule_from_values,
)

GRID = [i / 200 for i in range(201)]
FAMILIES_WITH_ENDS = [
    ("power", {"p": 2.0}), ("power", {"p": 0.3}), ("linear", {}), ("step", {"switch": 0.4}),
    ("sigmoid", {"centre": 0.3, "width": 0.05}), ("cosine", {}),
]


@pytest.mark.parametrize(("name", "params"), FAMILIES_WITH_ENDS)
def test_monotone_with_exact_ends(name, params):
    schedule = make_schedule(name, **params)
    values = [schedule(s) for s in GRID]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(0.0 <= v <= 1.0 for v in values)


def test_closed_forms():
    assert make_schedule("power", p=2)(0.5) == 0.25
    assert make_schedule("power", p=3)(0.2) == pytest.approx(0.008)
    assert make_schedule("linear")(0.37) == pytest.approx(0.37)
    assert make_schedule("cosine")(0.5) == pytest.approx(0.5)
    assert make_schedule("step", switch=0.5)(0.49) == 0.0
    assert make_schedule("step", switch=0.5)(0.5) == 1.0
    assert make_schedule("constant", value=0.3)(0.9) == 0.3
    sigmoid = make_schedule("sigmoid", centre=0.5, width=0.1)
    assert sigmoid(0.5) == pytest.approx(0.5)
    logistic = lambda x: 1 / (1 + math.exp(-(x - 0.5) / 0.1))  # noqa: E731
    expected = (logistic(0.7) - logistic(0)) / (logistic(1) - logistic(0))
    assert sigmoid(0.7) == pytest.approx(expected)


def test_larger_p_follows_base_longer():
    low, high = make_schedule("power", p=1), make_schedule("power", p=4)
    assert all(high(s) <= low(s) for s in GRID)
    assert high(0.5) < low(0.5)


def test_window_compresses_transition():
    windowed = make_schedule("linear", start=0.4, end=0.6)
    assert windowed(0.39) == 0.0 and windowed(0.61) == 1.0
    assert windowed(0.5) == pytest.approx(0.5)
    weights = [windowed(i / 20) for i in range(20)]
    mixed = [w for w in weights if 0.0 < w < 1.0]
    assert len(mixed) == 3  # only steps inside the 20% window run both models


def test_progress_is_clamped():
    schedule = make_schedule("power", p=2)
    assert schedule(-0.5) == 0.0 and schedule(1.5) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "exponential"}, "valid choices: power, linear, step, sigmoid, cosine, constant"),
        ({"name": "power", "p": 0.0}, "valid range is (0.0, 100.0]"),
        ({"name": "power", "p": -1.0}, "p = -1.0 is out of range"),
        ({"name": "power", "p": float("nan")}, "must be a number"),
        ({"name": "step", "switch": 1.5}, "valid range is [0.0, 1.0]"),
        ({"name": "sigmoid", "width": 0.0}, "width = 0.0 is out of range"),
        ({"name": "linear", "p": 2.0}, "valid parameters: none"),
        ({"name": "power", "start": 0.7, "end": 0.3}, "window start (0.7) must be below window end (0.3)"),
        ({"name": "power", "start": -0.1}, "window start = -0.1 is out of range"),
    ],
)
def test_invalid_inputs_name_the_valid_choices(kwargs, message):
    with pytest.raises(ScheduleError) as error:
        make_schedule(**kwargs)
    assert message in str(error.value)


def test_schedule_from_values_keeps_only_family_parameters():
    schedule = schedule_from_values({"schedule": "power", "p": 3.0, "switch": 0.9, "width": 0.2, "value": 0.1})
    assert schedule.params == {"p": 3.0}
    with pytest.raises(ScheduleError, match="valid choices"):
        schedule_from_values({"schedule": "nope"})


def test_schedule_from_values_reads_the_window_and_defaults():
    schedule = schedule_from_values({"schedule": "sigmoid", "width": 0.3, "window_start": 0.2, "window_end": 0.7})
    assert schedule == make_schedule("sigmoid", start=0.2, end=0.7, centre=0.5, width=0.3)
    assert schedule_from_values({}) == make_schedule("power", p=2.0)
    with pytest.raises(ScheduleError, match=r"window start \(0.8\) must be below"):
        schedule_from_values({"schedule": "linear", "window_start": 0.8, "window_end": 0.2})


def test_one_vocabulary_is_consistent():
    """Flat parameter names are unique across families, defaults are valid, widget minima lie in range."""
    from comfy_aig.core.schedules import FAMILIES, PARAMETERS, VALUE_NAMES, WINDOW

    assert sum(len(f.parameters) for f in FAMILIES.values()) == len(PARAMETERS)
    assert VALUE_NAMES == ("schedule", "p", "switch", "centre", "width", "value", "window_start", "window_end")
    for family in FAMILIES.values():
        assert make_schedule(family.name).params == {p.name: p.default for p in family.parameters}
        for parameter in family.parameters:
            assert parameter.check(family.name, parameter.minimum) == parameter.minimum
            with pytest.raises(ScheduleError, match="out of range"):
                parameter.check(family.name, parameter.high + 1)
    assert [(w.default, w.low, w.high) for w in WINDOW] == [(0.0, 0.0, 1.0), (1.0, 0.0, 1.0)]


def test_cli_flags_come_from_the_vocabulary():
    import argparse

    from comfy_aig.core.schedules import PARAMETERS
    from comfy_aig.training.schedule_cli import add_arguments, schedule_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["sigmoid", "--width", "0.25", "--start", "0.1"])
    assert {name: getattr(args, name) for name in PARAMETERS if name != "width"} == {
        name: p.default for name, p in PARAMETERS.items() if name != "width"}
    assert schedule_from_args(args.name, args) == make_schedule("sigmoid", start=0.1, width=0.25)


def test_sample_curve_and_describe():
    curve = sample_curve(make_schedule("power", p=2), 5)
    assert curve == [(0.0, 0.0), (0.25, 0.0625), (0.5, 0.25), (0.75, 0.5625), (1.0, 1.0)]
    assert make_schedule("linear", start=0.2, end=0.8).describe() == "linear window [0.2, 0.8]"
    assert set(SCHEDULE_NAMES) == {"power", "linear", "step", "sigmoid", "cosine", "constant"}
    with pytest.raises(ScheduleError):
        sample_curve(make_schedule(), 1)

"""The frontend's server routes (nodes/web_routes.py) through a real ComfyUI server; no browser needed.

The curves must be core's own numbers (the gamma formulas live in core/schedules.py only) and an invalid
combination must come back as 400 with core's message, which the node then shows in red."""

from __future__ import annotations

import pytest
import requests

from comfy_aig.core.schedules import FAMILIES, ScheduleError, make_schedule, sample_curve

pytestmark = pytest.mark.comfyui


def get(server, path: str, **params) -> requests.Response:
    return requests.get(f"{server.url}{path}", params=params, timeout=30)


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_families_route_is_core_vocabulary(comfy_server, prefix):
    answer = get(comfy_server, f"{prefix}/aig/schedule_families")
    assert answer.status_code == 200
    assert answer.json() == {name: list(f.parameter_names) for name, f in FAMILIES.items()}


def test_curve_route_returns_core_numbers(comfy_server):
    answer = get(comfy_server, "/api/aig/schedule_curve", schedule="power", p="3", window_start="0.2",
                 window_end="0.9", points="11", steps="7")
    assert answer.status_code == 200
    data = answer.json()
    schedule = make_schedule("power", start=0.2, end=0.9, p=3.0)
    assert data["describe"] == schedule.describe() == "power(p=3) window [0.2, 0.9]"
    assert data["points"] == [[s, g] for s, g in sample_curve(schedule, 11)]
    assert data["steps"] == [[i / 7, schedule(i / 7)] for i in range(7)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_has_a_default_curve(comfy_server, family):
    data = get(comfy_server, "/aig/schedule_curve", schedule=family).json()
    assert len(data["points"]) == 101 and "steps" not in data
    assert data["points"] == [[s, g] for s, g in sample_curve(make_schedule(family), 101)]


def test_other_families_parameters_are_ignored(comfy_server):
    """The extension may send every widget; only the chosen family's own parameters count."""
    data = get(comfy_server, "/aig/schedule_curve", schedule="linear", p="7", switch="0.1", points="3").json()
    assert data == {"describe": "linear", "points": [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]}


def _core_message(**values) -> str:
    with pytest.raises(ScheduleError) as error:
        make_schedule(**values)
    return str(error.value)


@pytest.mark.parametrize("query, message", [
    ({"schedule": "power", "window_start": "0.8", "window_end": "0.2"},
     _core_message(name="power", start=0.8, end=0.2)),
    ({"schedule": "power", "p": "0"}, _core_message(name="power", p=0.0)),
    ({"schedule": "sigmoid", "width": "11"}, _core_message(name="sigmoid", width=11.0)),
    ({"schedule": "quadratic"}, _core_message(name="quadratic")),
    ({"schedule": "power", "p": "two"}, "p must be a number, got 'two'"),
    ({"schedule": "power", "p": "nan"}, "p must be a finite number, got 'nan'"),
    ({"schedule": "power", "points": "1"}, "points = 1 is out of range; valid range is [2, 1001]"),
    ({"schedule": "power", "steps": "0"}, "steps = 0 is out of range; valid range is [1, 10000]"),
])
def test_invalid_combination_is_400_with_the_message(comfy_server, query, message):
    answer = get(comfy_server, "/aig/schedule_curve", **query)
    assert answer.status_code == 400
    assert answer.json() == {"error": message}

"""HTTP routes for the pack's frontend (web/): the schedule vocabulary and sampled gamma(s) curves.

The gamma formulas live in core/schedules.py only; the browser draws what these routes return:

- GET /aig/schedule_families -> {family: [parameter names]}, e.g. {"power": ["p"], "linear": [], ...}
- GET /aig/schedule_curve?schedule=power&p=2&window_start=0&window_end=1&points=101&steps=20
    -> {"describe": "power(p=2)", "points": [[s, gamma], ...], "steps": [[i/steps, gamma], ...]}
  or 400 {"error": message} for an invalid combination (the message the node shows at /prompt time).

Registered once on ComfyUI's PromptServer (``register_routes``), from AIGExtension.on_load.
"""

from __future__ import annotations

import math

from aiohttp import web

from ..core.errors import AIGInputError
from ..core.schedules import FAMILIES, PARAMETERS, WINDOW, sample_curve, schedule_from_values

MAX_POINTS = 1001
MAX_STEPS = 10000  # AIGSampler's steps maximum
_NUMERIC = (*PARAMETERS, *(p.name for p in WINDOW))
_registered = False


class CurveRequestError(ValueError):
    """A query value that is not usable; the message names it."""


def schedule_families() -> dict[str, list[str]]:
    """{family: [its parameter names]} in core's order."""
    return {name: list(family.parameter_names) for name, family in FAMILIES.items()}


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CurveRequestError(f"{name} must be a number, got {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise CurveRequestError(f"{name} must be a finite number, got {text!r}")
    return value


def _count(name: str, text: str | None, default: int | None, low: int, high: int) -> int | None:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise CurveRequestError(f"{name} must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise CurveRequestError(f"{name} = {value} is out of range; valid range is [{low}, {high}]")
    return value


def schedule_curve(query) -> dict:
    """The curve answer for a query mapping (strings); AIGInputError or CurveRequestError when invalid."""
    values = {"schedule": query.get("schedule", "power")}
    values.update({name: _number(name, query[name]) for name in _NUMERIC if name in query})
    schedule = schedule_from_values(values)
    points = _count("points", query.get("points"), 101, 2, MAX_POINTS)
    steps = _count("steps", query.get("steps"), None, 1, MAX_STEPS)
    answer = {"describe": schedule.describe(), "points": [[s, g] for s, g in sample_curve(schedule, points)]}
    if steps is not None:
        answer["steps"] = [[i / steps, schedule(i / steps)] for i in range(steps)]
    return answer


async def get_schedule_families(request: web.Request) -> web.Response:
    return web.json_response(schedule_families())


async def get_schedule_curve(request: web.Request) -> web.Response:
    try:
        return web.json_response(schedule_curve(request.rel_url.query))
    except (AIGInputError, CurveRequestError) as error:
        return web.json_response({"error": str(error)}, status=400)


def register_routes(routes) -> bool:
    """Add the routes to an aiohttp RouteTableDef (ComfyUI's PromptServer.instance.routes) once per process;
    returns False when they were already added."""
    global _registered
    if _registered:
        return False
    routes.get("/aig/schedule_families")(get_schedule_families)
    routes.get("/aig/schedule_curve")(get_schedule_curve)
    _registered = True
    return True


def register_with_comfyui() -> bool:
    """register_routes on the running ComfyUI server; False (and nothing done) without one (tests, CLI)."""
    try:
        import server  # noqa: PLC0415 - ComfyUI's module, present only inside ComfyUI
    except ImportError:
        return False
    instance = getattr(server.PromptServer, "instance", None)
    if instance is None:
        return False
    return register_routes(instance.routes)

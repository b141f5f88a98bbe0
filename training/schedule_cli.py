"""`comfy-aig schedule`: the per-step AIG weights gamma(s_i) of a schedule (Jena et al. 2024, Sec. 4).

The schedule flags (shared with `comfy-aig sample`) are generated from core/schedules.py: one flag per
family parameter (--p, --switch, ...) and the window as --start / --end.
"""

from __future__ import annotations

import argparse

from ..core.schedules import PARAMETERS, SCHEDULE_NAMES, WINDOW, schedule_from_values

WINDOW_FLAGS = dict(zip(("start", "end"), WINDOW))  # flag -> core window parameter


def add_schedule_arguments(parser: argparse.ArgumentParser, what: str = "schedule parameter") -> None:
    """--<parameter> for every family parameter and --start / --end for the window, defaults from core."""
    for name, parameter in PARAMETERS.items():
        parser.add_argument(f"--{name}", type=float, default=parameter.default,
                            help=f"{what} (default {parameter.default}); {parameter.help}")
    for flag, parameter in WINDOW_FLAGS.items():
        parser.add_argument(f"--{flag}", type=float, default=parameter.default,
                            help=f"window {flag} in progress (default {parameter.default:g})")


def schedule_from_args(family: str, args: argparse.Namespace):
    """The Schedule that a family name and the flags of add_schedule_arguments describe."""
    values = {name: getattr(args, name) for name in PARAMETERS}
    values.update({parameter.name: getattr(args, flag) for flag, parameter in WINDOW_FLAGS.items()})
    return schedule_from_values({"schedule": family, **values})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Schedule family, its parameters, an optional window and the number of steps."""
    parser.add_argument("name", choices=SCHEDULE_NAMES, help="schedule family")
    add_schedule_arguments(parser, "family parameter")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")


def run(args: argparse.Namespace) -> int:
    """Print one line per step: index, progress s = i/steps and gamma(s)."""
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    schedule = schedule_from_args(args.name, args)
    print(f"# {schedule.describe()}")  # noqa: T201 - command output
    for i in range(args.steps):
        s = i / args.steps
        print(f"{i:4d}  s={s:.4f}  gamma={schedule(s):.6f}")  # noqa: T201
    return 0

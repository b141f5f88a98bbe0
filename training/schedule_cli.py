"""`comfy-aig schedule`: the per-step AIG weights gamma(s_i) of a schedule (Jena et al. 2024, Sec. 4)."""

from __future__ import annotations

import argparse

from ..core.schedules import DEFAULT_PARAMETERS, SCHEDULE_NAMES, schedule_from_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Schedule family, its parameters, an optional window and the number of steps."""
    parser.add_argument("name", choices=SCHEDULE_NAMES, help="schedule family")
    for key, value in DEFAULT_PARAMETERS.items():
        parser.add_argument(f"--{key}", type=float, default=value, help=f"family parameter (default {value})")
    parser.add_argument("--start", type=float, default=0.0, help="window start in progress (default 0)")
    parser.add_argument("--end", type=float, default=1.0, help="window end in progress (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")


def run(args: argparse.Namespace) -> int:
    """Print one line per step: index, progress s = i/steps and gamma(s)."""
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    values = {key: getattr(args, key) for key in DEFAULT_PARAMETERS}
    schedule = schedule_from_inputs(args.name, start=args.start, end=args.end, **values)
    print(f"# {schedule.describe()}")  # noqa: T201 - command output
    for i in range(args.steps):
        s = i / args.steps
        print(f"{i:4d}  s={s:.4f}  gamma={schedule(s):.6f}")  # noqa: T201
    return 0

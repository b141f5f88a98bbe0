"""`comfy-aig` command line: one subcommand per module, each imported only when it runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module (relative to comfy_aig) exposing `add_arguments(parser)` and `run(args) -> int`.
# Modules listed here must import nothing heavy at module level (help must stay fast).
COMMANDS = {
    "schedule": ("training.schedule_cli", "Print the AIG weight gamma(s) of a schedule at each sampling step."),
    "train": ("training.train_cli", "DRaFT LoRA finetuning of SD1.x/SDXL on a differentiable reward (KL, resume, torchrun)."),
    "sample": ("training.sample_cli", "Sample PNGs outside ComfyUI: base model, a LoRA at a scale, or AIG."),
    "evaluate": ("training.evaluate", "Sweep base, LoRA scaling, AIG and KL LoRAs over a prompt set into an evaluation report (torchrun, resumable)."),
    "verify-lora": ("training.verify_lora", "Check a kohya LoRA against a base checkpoint: matched modules, scale."),
    "demo": ("training.demo.demo_cli", "CPU demo: DRaFT reward hacking on a toy world and the AIG reward-diversity front."),
}


def build_parser() -> argparse.ArgumentParser:
    """Top-level parser with one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="comfy-aig",
        description="Annealed Importance Guidance (Jena et al. 2024): reward-aligned yet diverse diffusion.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f".{module_name}", __package__)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `comfy-aig` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"comfy-aig {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

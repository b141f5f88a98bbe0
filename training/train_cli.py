"""`comfy-aig train`: DRaFT LoRA finetuning from a TOML config (or preset) with `--set section.key=value`."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --resume, --print-config, --list-keys."""
    parser.add_argument("--config", default=None,
                        help="TOML config file or preset name (sd15, sdxl in comfy_aig/training/configs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (TOML syntax), e.g. --set optim.lr=5e-5 (repeatable)")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (latest checkpoint in output.dir, if any), 'none', or a checkpoint folder")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--list-keys", action="store_true", help="list every config key with its help and exit")


def run(args: argparse.Namespace) -> int:
    """Resolve the config and train."""
    from .config import config_to_dict, describe_fields, load_config

    if args.list_keys:
        print(describe_fields())  # noqa: T201 - command output
        return 0
    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(config_to_dict(config), indent=2))  # noqa: T201
        return 0
    if not config.model.path:
        raise ValueError("model.path is empty; pass --set model.path=/path/to/checkpoint.safetensors")
    from .trainer import train

    metrics = train(config, resume=args.resume)
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))  # noqa: T201
    return 0

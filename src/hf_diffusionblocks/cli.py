"""What each `hf-diffusionblocks` command runs, once `hf_diffusionblocks_cli` has parsed its arguments.

The parser lives outside the package (`src/hf_diffusionblocks_cli`) so that `--help` and argument errors
answer without importing torch; this module is imported only to run a command. The model family is
found from `model_type` in config.json through the Auto-class registrations that importing
`hf_diffusionblocks` performs, so every registered family works the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from huggingface_hub.errors import HfHubHTTPError

from .command_assemble import command_assemble
from .command_info import command_info
from .partition import PARTITION_FIELDS, assign_layers_to_blocks
from .pretrained.command_convert import command_convert
from .pretrained.command_encode import command_encode
from .schedulers import DiffusionBlocksScheduler


def command_partition(args: argparse.Namespace) -> int:
    scheduler = DiffusionBlocksScheduler(**{name: getattr(args, name) for name in PARTITION_FIELDS})
    layers_per_block = args.layers_per_block
    if layers_per_block is not None:
        layers_per_block = assign_layers_to_blocks(sum(layers_per_block), args.num_blocks, layers_per_block)
    print(scheduler.partition_table(layers_per_block))
    boundaries = ", ".join(f"{sigma:.4f}" for sigma in scheduler.block_sigmas.flip(0).tolist())
    print(f"boundaries (increasing): {boundaries}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "info": command_info,
    "assemble": command_assemble,
    "partition": command_partition,
    "convert": command_convert,
    "encode": command_encode,
}


def run_command(args: argparse.Namespace) -> int:
    """Run `args.command`; exit status 1 with a one-line message (no traceback) on any error, 130 if interrupted."""
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError, HfHubHTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a command line answers with a message, never a traceback
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1

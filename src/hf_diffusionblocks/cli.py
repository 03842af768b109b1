"""`hf-diffusionblocks` command line: inspect checkpoints, assemble blocks, print partitions.

    hf-diffusionblocks info PATH_OR_REPO [--subfolder transformer]
    hf-diffusionblocks assemble OUTPUT_DIR BLOCK_DIR [BLOCK_DIR ...]
    hf-diffusionblocks partition --num_blocks 3 [--partition equiprobable] [--overlap 0.05]
    hf-diffusionblocks convert SRC OUT --num_blocks B [--partition equiprobable|uniform] [--overlap γ]
    hf-diffusionblocks encode PIPELINE_DIR OUTPUT_FILE [--dataset_name digits]

The model family is found from `model_type` in config.json through the Auto-class registrations
that importing `hf_diffusionblocks` performs, so every registered family works the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from huggingface_hub.errors import HfHubHTTPError

from .command_assemble import add_assemble_command
from .command_info import add_info_command
from .partition import PARTITION_FIELDS, PARTITIONS, assign_layers_to_blocks
from .pretrained.command_convert import add_convert_command
from .pretrained.command_encode import add_encode_command
from .schedulers import DiffusionBlocksScheduler


# ---- partition -----------------------------------------------------------------------------------


def command_partition(args: argparse.Namespace) -> int:
    scheduler = DiffusionBlocksScheduler(**{name: getattr(args, name) for name in PARTITION_FIELDS})
    layers_per_block = args.layers_per_block
    if layers_per_block is not None:
        layers_per_block = assign_layers_to_blocks(sum(layers_per_block), args.num_blocks, layers_per_block)
    print(scheduler.partition_table(layers_per_block))
    boundaries = ", ".join(f"{sigma:.4f}" for sigma in scheduler.block_sigmas.flip(0).tolist())
    print(f"boundaries (increasing): {boundaries}")
    return 0


# ---- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-diffusionblocks", description="DiffusionBlocks checkpoints and partitions."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_info_command(commands)
    add_assemble_command(commands)
    table = commands.add_parser("partition", help="print the noise partition of a DiffusionBlocksScheduler")
    table.add_argument("--num_blocks", type=int, default=3)
    table.add_argument("--partition", choices=PARTITIONS, default="equiprobable")
    table.add_argument("--overlap", type=float, default=0.05)
    table.add_argument("--sigma_min", type=float, default=0.002)
    table.add_argument("--sigma_max", type=float, default=80.0)
    table.add_argument("--p_mean", type=float, default=-1.2)
    table.add_argument("--p_std", type=float, default=1.2)
    table.add_argument(
        "--layers_per_block", type=int, nargs="+", default=None, help="layer count of each block"
    )
    table.set_defaults(run=command_partition)
    add_convert_command(commands)
    add_encode_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-diffusionblocks`; exit status 1 with a one-line message (no traceback) on any error."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, HfHubHTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a command line answers with a message, never a traceback
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

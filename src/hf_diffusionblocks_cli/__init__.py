"""The `hf-diffusionblocks` command: its arguments, parsed before the library is imported.

    hf-diffusionblocks info PATH_OR_REPO [--subfolder transformer]
    hf-diffusionblocks assemble OUTPUT_DIR BLOCK_DIR [BLOCK_DIR ...]
    hf-diffusionblocks partition --num_blocks 3 [--partition equiprobable] [--overlap 0.05]
    hf-diffusionblocks convert SRC OUT --num_blocks B [--partition equiprobable|uniform] [--overlap γ]
    hf-diffusionblocks encode PIPELINE_DIR OUTPUT_FILE [--dataset_name digits]

Why this sits beside the package rather than in it: importing `hf_diffusionblocks` registers every
family with transformers' Auto classes, which imports torch, transformers and diffusers (seconds).
Python runs a package's `__init__` before any of its modules, so a parser inside the package could not
answer `--help` or an argument error without paying for that. This module imports only the standard
library; the command itself runs in `hf_diffusionblocks.cli`, imported once the arguments parse.

The choices below repeat three tuples of the library (`tests/test_cli.py` checks that they equal
`partition.PARTITIONS`, `pretrained.time_axis.TIME_PARTITIONS` and `pretrained.initial_layers.INITS`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

PARTITIONS = ("equiprobable", "uniform_linear", "uniform_log")
TIME_PARTITIONS = ("equiprobable", "uniform")
INITS = ("contiguous", "strided")


def add_info_command(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="model type, partition and per-block status of a folder or Hub repo")
    info.add_argument("path_or_repo", help="a model folder, a pipeline folder (model in --subfolder) or a Hub repo id")
    info.add_argument("--subfolder", default="transformer", help="where a pipeline keeps its model (default: transformer)")
    info.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    info.add_argument("--cache_dir", default=None, help="Hub cache folder")
    info.add_argument("--local_files_only", action="store_true", help="use only files already in the Hub cache")


def add_assemble_command(commands: argparse._SubParsersAction) -> None:
    merge = commands.add_parser("assemble", help="merge folders that each hold some blocks into one folder")
    merge.add_argument("output_dir", help="the merged folder to create (must not exist, or be empty)")
    merge.add_argument("block_dirs", nargs="+", help="model or pipeline folders, each holding some blocks")
    merge.add_argument("--subfolder", default="transformer", help="where pipeline folders keep the model")
    merge.add_argument("--require_complete", action="store_true", help="fail if any block is missing")
    merge.add_argument(
        "--no_verify", action="store_true",
        help="skip hashing every block file against the checksum it recorded (faster for large blocks)",
    )


def add_partition_command(commands: argparse._SubParsersAction) -> None:
    table = commands.add_parser(
        "partition", help="print the noise partition of a DiffusionBlocksScheduler",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    table.add_argument("--num_blocks", type=int, default=3, help="number of blocks B")
    table.add_argument("--partition", choices=PARTITIONS, default="equiprobable", help="how the noise levels are cut")
    table.add_argument("--overlap", type=float, default=0.05, help="training overlap gamma in [0, 1)")
    table.add_argument("--sigma_min", type=float, default=0.002, help="smallest noise level")
    table.add_argument("--sigma_max", type=float, default=80.0, help="largest noise level")
    table.add_argument("--p_mean", type=float, default=-1.2, help="mean of log sigma during training")
    table.add_argument("--p_std", type=float, default=1.2, help="std of log sigma during training")
    table.add_argument("--layers_per_block", type=int, nargs="+", default=None, help="layer count of each block")


def add_convert_command(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser(
        "convert", help="split a pretrained diffusers transformer (DiT, PixArt, SD3, Flux) into B blocks"
    )
    convert.add_argument("source", help="a diffusers transformer folder, or a pipeline folder (transformer in --subfolder)")
    convert.add_argument("output_dir", help="the folder to write: a pipeline folder for a pipeline source, else the converted transformer folder")
    convert.add_argument("--num_blocks", type=int, required=True, help="number of blocks B (at most the number of layers)")
    convert.add_argument("--partition", choices=TIME_PARTITIONS, default="equiprobable",
                         help="equal training mass per block, or equal widths of the timestep axis")
    convert.add_argument("--overlap", type=float, default=0.05, help="training overlap gamma in [0, 1)")
    convert.add_argument("--subfolder", default=None, help="the transformer's folder in a pipeline (default: transformer)")
    convert.add_argument("--layers_per_block", type=int, nargs="+", default=None, help="uneven layer counts, one per block")
    convert.add_argument("--init", choices=INITS, default="strided",
                         help="source layers each block starts from: strided (every block: layers spread evenly over the "
                              "whole depth, first and last kept; recovers the source in a fraction of the fine-tuning steps) "
                              "or contiguous (block b: the b-th slice; the blocks together are the source exactly)")
    convert.add_argument("--logit_mean", type=float, default=0.0, help="flow models: mean of the logit-normal training time")
    convert.add_argument("--logit_std", type=float, default=1.0, help="flow models: std of the logit-normal training time")
    convert.add_argument("--transformer_only", action="store_true",
                         help="for a pipeline source, write only the converted transformer folder; by default OUTPUT_DIR "
                              "is a pipeline folder (the source's other components, the converted transformer in its "
                              "subfolder) that DiffusionPipeline.from_pretrained(..., trust_remote_code=True) loads")
    convert.add_argument("--push_to_hub", action="store_true",
                         help="upload OUTPUT_DIR to --hub_model_id: the shared files in one commit, then each block in its own")
    convert.add_argument("--hub_model_id", default=None, help="with --push_to_hub: the Hub repo to upload to (created if absent)")
    convert.add_argument("--hub_token", default=None, help="with --push_to_hub: the token (default: the logged-in one, or HF_TOKEN)")


def add_encode_command(commands: argparse._SubParsersAction) -> None:
    encode = commands.add_parser(
        "encode", help="encode a labelled image dataset with a diffusers DiT pipeline's VAE (the fine-tuning latents file)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    encode.add_argument("pipeline_dir", help="a diffusers pipeline folder with vae/ and a class-conditional transformer/")
    encode.add_argument("output_file", help="the safetensors file to write (latents, class_labels); must not exist")
    encode.add_argument("--dataset_name", default="digits",
                        help="'digits', 'fashion_mnist', an image folder (one sub-folder per class) or a `datasets` name")
    encode.add_argument("--split", default="train", help="the dataset split to encode")
    encode.add_argument("--batch_size", type=int, default=256, help="images per VAE forward pass")
    encode.add_argument("--max_samples", type=int, default=None, help="encode only the first N images (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-diffusionblocks", description="DiffusionBlocks checkpoints and partitions.")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (add_info_command, add_assemble_command, add_partition_command, add_convert_command,
                        add_encode_command):
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-diffusionblocks`: parse, then import the library and run the command.

    Exit status 2 with argparse's usage line for a wrong argument, 1 with one `error:` line (no traceback)
    when the command fails, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    from hf_diffusionblocks.cli import run_command  # the library, only once the arguments are known to parse

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())

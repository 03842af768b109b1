"""The shared training flags: a family's own training modes, block index parsing."""

import argparse

import pytest

from hf_diffusionblocks.training import TRAINING_MODES, add_common_training_arguments, parse_block_index, require_at_least


def parser_with(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_common_training_arguments(parser, **kwargs)
    return parser


def test_a_family_adds_its_own_training_mode():
    parser = parser_with(training_modes=(*TRAINING_MODES, "bptt"))
    assert parser.parse_args(["--output_dir", "x", "--training_mode", "bptt"]).training_mode == "bptt"
    with pytest.raises(SystemExit):
        parser_with().parse_args(["--output_dir", "x", "--training_mode", "bptt"])


def test_training_modes_must_keep_the_shared_two():
    with pytest.raises(ValueError, match="training_modes must include"):
        parser_with(training_modes=("bptt",))


def test_family_defaults_override_the_shared_ones():
    args = parser_with(defaults={"learning_rate": 3e-4}).parse_args(["--output_dir", "x"])
    assert args.learning_rate == 3e-4 and args.block_index == "all" and args.training_mode == "blockwise"


@pytest.mark.parametrize("value, expected", [("all", "all"), ("0", 0), ("2", 2)])
def test_block_index_parsing(value, expected):
    assert parse_block_index(value) == expected


def test_require_at_least_names_the_flag_and_skips_unset_ones():
    args = argparse.Namespace(a=1, b=None, c=0)
    require_at_least(args, ("a", "b"))
    require_at_least(args, ("c",), minimum=0)
    with pytest.raises(ValueError, match=r"--c must be >= 1, got 0\."):
        require_at_least(args, ("a", "b", "c"))

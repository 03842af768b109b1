"""The shared training flags: a family's own training modes, block index parsing, diffusers' flag names,
the step budget, refused combinations, the text data flags."""

import argparse

import pytest

from hf_diffusionblocks.training import (
    DEFAULT_MAX_TRAIN_STEPS,
    TRAINING_MODES,
    HelpFormatter,
    add_common_training_arguments,
    add_text_data_arguments,
    parse_block_index,
    require_at_least,
    resolve_max_train_steps,
    validate_common_arguments,
    validate_text_data_arguments,
)


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


# ---------------------------------------------------------------- diffusers' conventions


def parsed(argv, **kwargs) -> argparse.Namespace:
    args = parser_with(**kwargs).parse_args(["--output_dir", "x", *argv])
    validate_common_arguments(args)
    return args


def test_help_shows_defaults_and_explains_unset_flags():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_common_training_arguments(parser)
    text = " ".join(parser.format_help().split())      # without the line wrapping
    assert "(default: 128)" in text and "(default: constant_with_warmup)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "Default: 1000, unless --num_train_epochs" in text


def test_dataset_name_with_the_old_spelling_as_alias():
    assert parsed(["--dataset_name", "digits"]).dataset_name == "digits"
    assert parsed(["--dataset", "digits"]).dataset_name == "digits"


def test_step_budget_from_steps_or_epochs_never_both():
    assert parsed([]).max_train_steps == DEFAULT_MAX_TRAIN_STEPS
    assert parsed(["--max_train_steps", "7"]).max_train_steps == 7
    args = parsed(["--num_train_epochs", "3", "--train_batch_size", "10"])
    assert args.max_train_steps is None
    assert resolve_max_train_steps(args, num_examples=105) == 30          # 10 full batches per epoch
    assert resolve_max_train_steps(parsed(["--num_train_epochs", "2", "--train_batch_size", "10"]), 105, replicas=2) == 10
    with pytest.raises(ValueError, match="--max_train_steps .* or --num_train_epochs .*, not both"):
        parsed(["--max_train_steps", "7", "--num_train_epochs", "1"])
    with pytest.raises(ValueError, match="--num_train_epochs must be >= 1"):
        parsed(["--num_train_epochs", "0"])
    with pytest.raises(ValueError, match="at least one full batch"):
        resolve_max_train_steps(parsed(["--num_train_epochs", "1", "--train_batch_size", "10"]), num_examples=9)


def test_flags_that_would_be_ignored_are_refused():
    with pytest.raises(ValueError, match="--overwrite_output_dir .* --resume_from_checkpoint .*choose one"):
        parsed(["--overwrite_output_dir", "--resume_from_checkpoint", "latest"])
    with pytest.raises(ValueError, match="--hub_token is used by --push_to_hub only"):
        parsed(["--hub_token", "hf_x"])


def test_a_family_without_a_noise_partition_has_no_partition_flags():
    assert {"--partition", "--overlap"} <= set(parser_with()._option_string_actions)
    parser = parser_with(noise_partition=False)
    assert not {"--partition", "--overlap"} & set(parser._option_string_actions)
    with pytest.raises(SystemExit):
        parser.parse_args(["--output_dir", "x", "--overlap", "0.1"])


def text_args(argv):
    parser = parser_with()
    add_text_data_arguments(parser)
    args = parser.parse_args(["--output_dir", "x", *argv])
    validate_text_data_arguments(args)
    return args


def test_text_data_flags(tmp_path):
    assert text_args([]).dataset_name == "shakespeare"
    (tmp_path / "a.txt").write_text("abc")
    args = text_args(["--train_file", str(tmp_path / "a.txt")])
    assert args.dataset_name is None and args.validation_split_percentage == 5
    with pytest.raises(ValueError, match="--dataset_name .* or --train_file .*, not both"):
        text_args(["--dataset_name", "jargon", "--train_file", str(tmp_path / "a.txt")])
    with pytest.raises(ValueError, match="--validation_file goes with --train_file"):
        text_args(["--validation_file", str(tmp_path / "a.txt")])
    with pytest.raises(ValueError, match="--train_file .*missing.txt: no such file"):
        text_args(["--train_file", str(tmp_path / "missing.txt")])
    with pytest.raises(ValueError, match="--validation_split_percentage must be in"):
        text_args(["--validation_split_percentage", "60"])

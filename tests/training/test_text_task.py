"""TextWindowTask: windows of one token stream as examples, fixed validation windows, saving a block, samples file."""

from types import SimpleNamespace

import pytest
import torch

from hf_diffusionblocks.training.text_task import SAMPLE_SEPARATOR, TextWindowTask, write_text_samples


def args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), validation_windows=3, push_to_hub=False, hub_model_id=None, hub_token=None)
    values.update(overrides)
    return SimpleNamespace(**values)


def make_task(tmp_path, window_length=4, validation_length=10, loss_function=None, **overrides):
    return TextWindowTask(None, object, loss_function or (lambda *a: torch.tensor(0.0)), torch.arange(20),
                          torch.arange(100, 100 + validation_length), args(tmp_path, **overrides), window_length=window_length)


def test_every_start_position_is_one_window(tmp_path):
    task = make_task(tmp_path)
    assert task.num_examples == 17
    batch = task.get_batch(torch.tensor([0, 16, 5]), torch.device("cpu"))["input_ids"]
    assert batch.tolist() == [[0, 1, 2, 3], [16, 17, 18, 19], [5, 6, 7, 8]]


def test_validation_uses_at_most_the_requested_whole_windows(tmp_path):
    assert make_task(tmp_path).validation_windows.tolist() == [[100, 101, 102, 103], [104, 105, 106, 107]]
    assert make_task(tmp_path, validation_windows=1).validation_windows.shape == (1, 4)
    assert make_task(tmp_path, validation_length=3).validation_windows.shape == (0, 4)
    assert len(make_task(tmp_path).validation_stream) == 10


def test_validation_loss_is_logged_with_a_fixed_generator(tmp_path):
    draws, logged = [], []

    def loss_function(model, block_index, input_ids, generator):
        draws.append(torch.rand(1, generator=generator).item())
        return input_ids.float().mean()

    task = make_task(tmp_path, loss_function=loss_function)
    accelerator = SimpleNamespace(device=torch.device("cpu"), is_main_process=True,
                                  log=lambda values, step: logged.append((values, step)))
    task.log_validation(None, 1, 7, accelerator)
    task.log_validation(None, 1, 8, accelerator)
    assert draws[0] == draws[1]
    assert logged[0] == ({"validation/loss_block_1": pytest.approx(103.5)}, 7)
    make_task(tmp_path, validation_length=3).log_validation(None, 0, 1, accelerator)   # no window: nothing logged
    assert len(logged) == 2


def test_a_stream_shorter_than_a_window_is_refused(tmp_path):
    with pytest.raises(ValueError, match="20 tokens, fewer than the 21 of one window"):
        make_task(tmp_path, window_length=21)


def test_samples_go_to_the_file_with_a_separator(tmp_path):
    write_text_samples(str(tmp_path), ["first", "second\nline"], SimpleNamespace(trackers=[], is_main_process=True))
    assert (tmp_path / "samples.txt").read_text() == "first" + SAMPLE_SEPARATOR + "second\nline\n"

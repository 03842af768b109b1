"""Tests every scheduler of the library must pass, as diffusers' own common scheduler tests do.

A scheduler's test module subclasses `SchedulerCommonTests` (as `Test<Name>Common`) and says how to
build its inputs: a clean sample, a model output for a sample at a timestep, one `step` and one
`add_noise` call. The base class then checks the config save/load round trip, `from_config`, step
shapes and the tuple return, `add_noise`, and timestep handling (count, order, block routing, resets,
and the errors for a step out of turn).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch


class SchedulerCommonTests:
    """Subclass and set `scheduler_class` and `config`; implement the four input hooks."""

    scheduler_class: type
    config: dict[str, Any] = {}
    num_inference_steps: int = 12

    # ---- what a subclass provides ---------------------------------------------------------------
    def clean_sample(self) -> torch.Tensor:
        raise NotImplementedError

    def model_output(self, sample: torch.Tensor, timestep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def step(self, scheduler, model_output, timestep, sample, generator, return_dict=True):
        raise NotImplementedError

    def add_noise(self, scheduler, sample: torch.Tensor, levels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # the noise level (σ or t) at which `add_noise` must return the sample unchanged
    clean_level: float = 0.0
    # whether a step count that is a multiple of num_blocks gives every block as many model evaluations
    equal_steps_per_block: bool = True

    # ---- helpers ------------------------------------------------------------------------------------
    def make_scheduler(self, **overrides):
        return self.scheduler_class(**{**self.config, **overrides})

    def full_loop(self, scheduler, seed: int = 0, num_inference_steps: int | None = None) -> torch.Tensor:
        """Sample from the scheduler's start with the subclass's model output; deterministic for a seed."""
        generator = torch.Generator().manual_seed(seed)
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps)
        sample = self.initial_sample(scheduler, generator)
        for timestep in scheduler.timesteps:
            output = self.model_output(sample, timestep, generator)
            sample = self.step(scheduler, output, timestep, sample, generator).prev_sample
        return sample

    def initial_sample(self, scheduler, generator: torch.Generator) -> torch.Tensor:
        """Where sampling starts: the clean sample fully noised at the first timestep."""
        sample = self.clean_sample()
        first_level = torch.full((sample.shape[0],), float(scheduler.timesteps[0]))
        return self.add_noise(scheduler, sample, first_level, generator)

    @staticmethod
    def public(config) -> dict:
        return {key: value for key, value in dict(config).items() if not key.startswith("_")}

    # ---- config -------------------------------------------------------------------------------------
    def test_config_records_the_arguments(self):
        scheduler = self.make_scheduler()
        for key, value in self.config.items():
            assert scheduler.config[key] == value
        assert len(scheduler) == scheduler.config.num_blocks

    def test_save_load_round_trip(self, tmp_path):
        scheduler = self.make_scheduler()
        scheduler.save_pretrained(tmp_path)
        loaded = self.scheduler_class.from_pretrained(tmp_path)
        assert type(loaded) is self.scheduler_class
        assert self.public(loaded.config) == self.public(scheduler.config)
        assert torch.equal(self.full_loop(loaded), self.full_loop(scheduler))

    def test_from_config(self):
        scheduler = self.make_scheduler()
        rebuilt = self.scheduler_class.from_config(scheduler.config)
        assert self.public(rebuilt.config) == self.public(scheduler.config)
        assert torch.equal(self.full_loop(rebuilt), self.full_loop(scheduler))
        changed = self.scheduler_class.from_config(scheduler.config, num_blocks=scheduler.config.num_blocks + 1)
        assert changed.config.num_blocks == scheduler.config.num_blocks + 1

    # ---- step ---------------------------------------------------------------------------------------
    def test_step_keeps_the_shape_and_returns_a_tuple_without_return_dict(self):
        generator = torch.Generator().manual_seed(0)
        scheduler, twin = self.make_scheduler(), self.make_scheduler()
        for each in (scheduler, twin):
            each.set_timesteps(self.num_inference_steps)
        sample = self.initial_sample(scheduler, generator)
        timestep = scheduler.timesteps[0]
        output = self.model_output(sample, timestep, generator)
        as_output = self.step(scheduler, output, timestep, sample, torch.Generator().manual_seed(1)).prev_sample
        as_tuple = self.step(twin, output, timestep, sample, torch.Generator().manual_seed(1), return_dict=False)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
        assert as_output.shape == sample.shape and as_output.dtype == sample.dtype
        assert torch.equal(as_output, as_tuple[0])

    def test_full_loop_is_deterministic_for_a_seed(self):
        first = self.full_loop(self.make_scheduler(), seed=3)
        assert first.shape == self.clean_sample().shape
        assert torch.equal(first, self.full_loop(self.make_scheduler(), seed=3))

    # ---- add_noise ----------------------------------------------------------------------------------
    def test_add_noise_keeps_the_shape_and_leaves_a_clean_level_unchanged(self):
        scheduler = self.make_scheduler()
        sample = self.clean_sample()
        batch = sample.shape[0]
        scheduler.set_timesteps(self.num_inference_steps)
        noisy = self.add_noise(scheduler, sample, scheduler.timesteps[:1].expand(batch), torch.Generator().manual_seed(0))
        assert noisy.shape == sample.shape and noisy.dtype == sample.dtype
        assert not torch.equal(noisy, sample)
        clean = self.add_noise(scheduler, sample, torch.full((batch,), self.clean_level), torch.Generator().manual_seed(0))
        assert torch.equal(clean, sample)

    def test_add_noise_takes_one_level_per_sample(self):
        scheduler = self.make_scheduler()
        sample = self.clean_sample()
        scheduler.set_timesteps(self.num_inference_steps)
        levels = torch.full((sample.shape[0],), float(scheduler.timesteps[0]))
        levels[0] = self.clean_level
        noisy = self.add_noise(scheduler, sample, levels, torch.Generator().manual_seed(0))
        assert torch.equal(noisy[0], sample[0]) and not torch.equal(noisy[1:], sample[1:])

    # ---- timesteps ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("num_inference_steps", [1, 3, 7, 12])
    def test_timesteps_decrease_and_route_blocks_in_order(self, num_inference_steps):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(num_inference_steps)
        timesteps, blocks = scheduler.timesteps, scheduler.block_indices
        evaluations = num_inference_steps * scheduler.order - (scheduler.order - 1)
        assert timesteps.shape == (evaluations,) and blocks.shape == (evaluations,)
        assert scheduler.num_inference_steps == num_inference_steps
        if evaluations > 1:
            assert torch.all(timesteps[1:] <= timesteps[:-1]) and timesteps[0] > timesteps[-1]
        assert torch.all(blocks[1:] >= blocks[:-1])  # block 0 owns the noisiest levels
        assert int(blocks.min()) >= 0 and int(blocks.max()) < scheduler.config.num_blocks
        if self.equal_steps_per_block and num_inference_steps % scheduler.config.num_blocks == 0:
            # a multiple of B gives every block the same number of steps
            counts = torch.bincount(blocks, minlength=scheduler.config.num_blocks)
            assert torch.all(counts == counts[0])

    def test_step_out_of_turn_raises(self):
        generator = torch.Generator().manual_seed(0)
        scheduler = self.make_scheduler()
        sample = self.clean_sample()
        with pytest.raises(ValueError, match="set_timesteps"):
            self.step(scheduler, self.model_output(sample, torch.tensor(0.5), generator), 0.5, sample, generator)
        scheduler.set_timesteps(2)
        output = self.model_output(sample, scheduler.timesteps[0], generator)
        with pytest.raises(ValueError, match="expected the model output"):
            self.step(scheduler, output, float(scheduler.timesteps[0]) / 2 + 1e-3, sample, generator)
        self.full_loop(scheduler, num_inference_steps=2)
        last = scheduler.timesteps[-1]
        with pytest.raises(ValueError, match="steps are done"):
            self.step(scheduler, self.model_output(sample, last, generator), last, sample, generator)

    def test_set_timesteps_again_restarts(self):
        scheduler = self.make_scheduler()
        first = self.full_loop(scheduler, seed=5)
        assert torch.equal(self.full_loop(scheduler, seed=5), first)
        assert scheduler.step_index == scheduler.num_inference_steps

    def test_bad_step_count_raises(self):
        with pytest.raises(ValueError, match="num_inference_steps"):
            self.make_scheduler().set_timesteps(0)

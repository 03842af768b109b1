"""BlockDenoisingLoss: the local objective of one block."""

import pytest
import torch

from conftest import randomize_
from hf_diffusionblocks import BlockDenoisingLoss, DiffusionBlocksDiTModel


def test_loss_only_touches_the_trained_block(tiny_dit_config):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config))
    loss_function = BlockDenoisingLoss(tiny_dit_config.noise_partition, tiny_dit_config.preconditioning)
    target = torch.randn(8, 1, 8, 8).clamp(-1, 1)
    loss = loss_function(model, 1, target, torch.Generator().manual_seed(0), class_labels=torch.arange(8))
    loss.backward()
    for block_index in range(3):
        has_gradient = [p.grad is not None and p.grad.abs().sum() > 0 for p in model.block_parameters(block_index)]
        assert all(has_gradient) if block_index == 1 else not any(has_gradient)


def test_loss_is_deterministic_given_a_generator(tiny_dit_config):
    model = randomize_(DiffusionBlocksDiTModel(tiny_dit_config))
    loss_function = BlockDenoisingLoss(tiny_dit_config.noise_partition, tiny_dit_config.preconditioning)
    target = torch.randn(8, 1, 8, 8)
    first = loss_function(model, 0, target, torch.Generator().manual_seed(1))
    second = loss_function(model, 0, target, torch.Generator().manual_seed(1))
    third = loss_function(model, 0, target, torch.Generator().manual_seed(2))
    assert first.item() == second.item() != third.item()


def test_zero_network_loss_has_unit_scale(tiny_dit_config):
    # At init (F = 0) and for data of std σ_data, λ-weighting makes the expected loss 1 at every σ.
    model = DiffusionBlocksDiTModel(tiny_dit_config)
    loss_function = BlockDenoisingLoss(tiny_dit_config.noise_partition, tiny_dit_config.preconditioning)
    target = 0.5 * torch.randn(512, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for block_index in range(3):
        value = loss_function(model, block_index, target, torch.Generator().manual_seed(block_index)).item()
        assert value == pytest.approx(1.0, rel=0.1)

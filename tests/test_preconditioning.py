"""EDM preconditioning: the coefficients of Karras et al. Table 1 and their limits."""

import pytest
import torch

from hf_diffusionblocks.preconditioning import EDMPreconditioning, add_noise


def test_coefficients_at_known_sigma():
    edm = EDMPreconditioning(sigma_data=0.5)
    sigma = torch.tensor(0.5)
    assert edm.c_skip(sigma).item() == pytest.approx(0.5)
    assert edm.c_out(sigma).item() == pytest.approx(0.25 / 0.5**0.5)
    assert edm.c_in(sigma).item() == pytest.approx(1 / 0.5**0.5)
    assert edm.c_noise(sigma).item() == pytest.approx(torch.log(sigma).item() / 4)
    assert edm.loss_weight(sigma).item() == pytest.approx(0.5 / 0.0625)


def test_limits_and_loss_weight_range():
    edm = EDMPreconditioning()
    assert edm.c_skip(torch.tensor(1e-6)).item() == pytest.approx(1.0)
    assert edm.c_out(torch.tensor(1e-6)).item() == pytest.approx(0.0, abs=1e-5)
    assert edm.c_skip(torch.tensor(1e3)).item() == pytest.approx(0.0, abs=1e-6)
    # docs/method.md, 'Loss weight': λ spans about 4 (σ=80) to 2.5e5 (σ=0.002)
    assert edm.loss_weight(torch.tensor(80.0)).item() == pytest.approx(4.0, rel=1e-3)
    assert edm.loss_weight(torch.tensor(0.002)).item() == pytest.approx(2.5e5, rel=1e-3)


def test_perfect_network_output_gives_the_target():
    edm = EDMPreconditioning()
    target = torch.randn(4, 3, 2, 2)
    sigma = torch.tensor([0.01, 0.3, 2.0, 50.0])
    noisy = add_noise(target, torch.randn_like(target), sigma)
    network_output = edm.effective_network_target(noisy, target, sigma)
    assert torch.allclose(edm.denoise(noisy, network_output, sigma), target, atol=1e-4)
    assert edm.weighted_l2_loss(target, target, sigma).item() == 0.0


def test_weighted_loss_is_unit_scale_for_the_zero_network():
    # With F = 0, D = c_skip z; λ·E‖D − y‖² = λ·c_out²·E‖F*‖² and E‖F*‖² = 1 for data of std σ_data.
    edm = EDMPreconditioning(sigma_data=0.5)
    generator = torch.Generator().manual_seed(0)
    target = 0.5 * torch.randn(20000, 1, generator=generator)
    sigma = torch.full((20000,), 0.7)
    noisy = add_noise(target, torch.randn(target.shape, generator=generator), sigma)
    loss = edm.weighted_l2_loss(edm.c_skip(sigma)[:, None] * noisy, target, sigma)
    assert loss.item() == pytest.approx(1.0, rel=0.05)


def test_bad_sigma_data():
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPreconditioning(sigma_data=0.0)

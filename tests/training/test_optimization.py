"""BlockOptimization: AdamW, schedule, scaler and EMA of one block, stepped, saved and restored as one state."""

import torch

from hf_diffusionblocks.training.arguments import OptimizationSettings
from hf_diffusionblocks.training.optimization import BlockOptimization


def settings(**overrides):
    values = dict(output_dir="unused", max_train_steps=10, learning_rate=0.1, lr_scheduler="linear", lr_warmup_steps=2,
                  max_grad_norm=0.5, use_ema=True, ema_decay=0.5)
    return OptimizationSettings(**{**values, **overrides})


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    parameters = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    return BlockOptimization.build(parameters, settings(**overrides), "cpu")


def train(optimization, steps, first_step=0):
    for step in range(first_step, first_step + steps):
        target = torch.full((2,), float(step))
        loss = ((optimization.parameters[0].sum(0) + optimization.parameters[1] - target) ** 2).sum()
        optimization.scaler.scale(loss).backward()
        optimization.step(max_grad_norm=0.5)


def test_restoring_the_state_continues_bit_exactly():
    uninterrupted = build()
    train(uninterrupted, 6)
    interrupted = build()
    train(interrupted, 3)
    state = interrupted.state_dict()
    assert sorted(state) == ["ema", "lr_schedule", "optimizer", "scaler"]
    resumed = build(seed=1)          # other initial weights: the saved weights are loaded separately
    with torch.no_grad():
        for target, source in zip(resumed.parameters, interrupted.parameters):
            target.copy_(source)
    resumed.load_state_dict(state)
    assert resumed.learning_rate == interrupted.learning_rate
    train(resumed, 3, first_step=3)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.parameters, resumed.parameters))
    uninterrupted.use_averaged_weights()
    resumed.use_averaged_weights()
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.parameters, resumed.parameters))


def test_a_step_clips_follows_the_schedule_and_clears_the_gradients():
    optimization = build(use_ema=False, lr_scheduler="constant", lr_warmup_steps=0, max_grad_norm=0.5)
    assert optimization.ema is None and "ema" not in optimization.state_dict()
    before = [p.detach().clone() for p in optimization.parameters]
    (1000 * sum(p.sum() for p in optimization.parameters)).backward()
    optimization.step(max_grad_norm=0.5)
    assert all(p.grad is None for p in optimization.parameters)
    # Adam's first step moves every coordinate by about the learning rate, whatever the gradient's scale
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, optimization.parameters)])
    assert torch.allclose(moved, torch.full_like(moved, 0.1), atol=1e-4)


def test_the_averaged_weights_replace_the_parameters_only_with_an_ema():
    optimization = build()
    train(optimization, 4)
    trained = [p.detach().clone() for p in optimization.parameters]
    optimization.use_averaged_weights()
    assert not all(torch.equal(a, b) for a, b in zip(trained, optimization.parameters))
    plain = build(use_ema=False)
    train(plain, 4)
    kept = [p.detach().clone() for p in plain.parameters]
    plain.use_averaged_weights()
    assert all(torch.equal(a, b) for a, b in zip(kept, plain.parameters))

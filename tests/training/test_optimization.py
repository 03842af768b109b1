"""BlockOptimization: AdamW, schedule, scaler and EMA of one block, stepped, saved and restored as one state."""

import copy

import pytest
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


def edited(state, edit):
    state = copy.deepcopy(state)
    edit(state)
    return state


@pytest.mark.parametrize("edit, named", [
    (lambda s: s["optimizer"]["param_groups"][0].update(lr=1000.0), r"param_groups\[0\]\.lr=1000\.0 \(the schedule at step 3"),
    (lambda s: s["optimizer"]["param_groups"][0].update(initial_lr=1000.0), r"param_groups\[0\]\.initial_lr=1000\.0 \(this run: 0\.1\)"),
    (lambda s: s["optimizer"]["param_groups"][0].update(betas=(0.5, 0.5)), r"betas=\(0\.5, 0\.5\) \(this run: \(0\.9, 0\.999\)\)"),
    (lambda s: s["lr_schedule"].update(base_lrs=[1000.0]), r"lr_schedule base_lrs=\[1000\.0\] \(this run: \[0\.1\]\)"),
    (lambda s: s["lr_schedule"].update(last_epoch=None), r"lr_schedule last_epoch=None \(the checkpoint's step: 3\)"),
    (lambda s: s["lr_schedule"].update(last_epoch=2), r"lr_schedule last_epoch=2 \(the checkpoint's step: 3\)"),
    (lambda s: s["ema"].update(decay=0.9), r"ema decay=0\.9 \(this run: 0\.5\)"),
    (lambda s: s.pop("scaler"), r"training state holds \['ema', 'lr_schedule', 'optimizer'\], this run saves"),
], ids=["lr", "initial_lr", "betas", "base_lrs", "last_epoch null", "last_epoch of another step", "ema decay", "no scaler"])
def test_a_state_that_does_not_match_the_settings_is_refused(edit, named):
    optimization = build()
    train(optimization, 3)
    state = optimization.state_dict()
    build().load_state_dict(state, where="checkpoint-3", step=3)                # the intact state loads
    with pytest.raises(ValueError, match=rf"checkpoint-3: the (training state does not match this run's settings: .*)?{named}"):
        build().load_state_dict(edited(state, edit), where="checkpoint-3", step=3)


def test_a_state_of_other_settings_is_refused():
    optimization = build()
    train(optimization, 3)
    with pytest.raises(ValueError, match=r"initial_lr=0\.1 \(this run: 0\.01\).*base_lrs=\[0\.1\] \(this run: \[0\.01\]\)"):
        build(learning_rate=0.01).load_state_dict(optimization.state_dict(), step=3)

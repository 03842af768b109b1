"""HF_DIFFUSIONBLOCKS_SMOKE: the one switch that makes the documented commands run at tiny settings."""

import argparse

from hf_diffusionblocks.smoke import SMOKE_CAPS, apply_smoke_caps, smoke_run


def test_caps_only_lower_and_only_in_a_smoke_run():
    def namespace():
        return argparse.Namespace(max_train_steps=1000, train_batch_size=8, train_batch_size_per_block=[64, 4],
                                  samples_per_class=8, num_train_epochs=None, use_ema=True, learning_rate=1e-3)

    args = namespace()
    assert apply_smoke_caps(args, environ={}) == {} and args == namespace()
    assert not smoke_run({"HF_DIFFUSIONBLOCKS_SMOKE": "0"}) and smoke_run({"HF_DIFFUSIONBLOCKS_SMOKE": "1"})
    changed = apply_smoke_caps(args, environ={"HF_DIFFUSIONBLOCKS_SMOKE": "1"})
    assert changed == {"max_train_steps": SMOKE_CAPS["max_train_steps"], "train_batch_size_per_block": [16, 4],
                       "samples_per_class": 1}
    assert args.train_batch_size == 8 and args.use_ema is True and args.learning_rate == 1e-3


def test_an_epoch_budget_becomes_the_capped_step_budget():
    args = argparse.Namespace(max_train_steps=None, num_train_epochs=30)
    apply_smoke_caps(args, environ={"HF_DIFFUSIONBLOCKS_SMOKE": "yes"})
    assert (args.num_train_epochs, args.max_train_steps) == (None, SMOKE_CAPS["max_train_steps"])

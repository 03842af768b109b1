"""BlockTrainableModel: every family's model and the pretrained fine-tuning model speak the trainer's interface."""

import pytest
import torch

from family_fixtures import tiny_config
from hf_diffusionblocks.families import FAMILIES
from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel
from hf_diffusionblocks.training.block_model import BlockTrainableModel
from converted_fixture import converted_dit  # noqa: F401  (the fixture)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_model_is_a_block_trainable_model(family):
    entry = FAMILIES[family]
    model = entry.model_class(tiny_config(entry), block_indices=[0])
    assert isinstance(model, BlockTrainableModel)


def test_the_pretrained_finetuning_model_is_one_too(converted_dit):
    assert isinstance(BlockFinetuningModel(str(converted_dit), 1), BlockTrainableModel)


def test_a_plain_module_or_one_missing_a_method_is_not():
    assert not isinstance(torch.nn.Linear(2, 2), BlockTrainableModel)

    class WithoutResume(torch.nn.Module):
        """Everything but `load_block_weights`: it could not be resumed."""

        config, layers_per_block, block_training_steps = None, [1], {}

        def block_parameters(self, block_index):
            return iter(())

        def block_state_dict(self, block_index):
            return {}

        def save_block(self, directory, block_index, training_steps=None):
            return directory

        @classmethod
        def check_block_file(cls, path, block_index, config):
            return None

    assert not isinstance(WithoutResume(), BlockTrainableModel)
    WithoutResume.load_block_weights = lambda self, block_index, tensors, source="state dict": None
    assert isinstance(WithoutResume(), BlockTrainableModel)

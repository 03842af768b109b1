"""A converted pretrained model to fine-tune, as a fixture: `from converted_fixture import converted_dit`."""

import json

import pytest
import torch


@pytest.fixture(scope="module")
def converted_dit(tmp_path_factory):
    """A pixel-space class-conditional diffusers DiT (one channel, 8×8, 4 layers) converted to B=2."""
    from diffusers import DDPMScheduler, DiTTransformer2DModel

    from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=2, num_layers=4,
                                        sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    transformer.save_pretrained(root / "source" / "transformer")
    DDPMScheduler().save_pretrained(root / "source" / "scheduler")
    (root / "source" / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    convert_pretrained_transformer(str(root / "source"), str(root / "converted"), 2)
    return root / "converted"

"""Configuration of the DiffusionBlocks DiT (class-conditional image diffusion transformer)."""

from __future__ import annotations

from ...argument_checks import check_number
from ...modeling.configuration_blocks import (
    DiffusionBlocksConfig,
    TransformerSize,
    require_positive_floats,
    require_positive_ints,
)


class DiffusionBlocksDiTConfig(DiffusionBlocksConfig):
    """A DiT whose layers are split into `num_blocks` independently trained denoising blocks.

    Field names follow transformers' ViT. Defaults are DiT-S/2 on 32×32 CIFAR-10 images, B = 3
    (the paper's setting). `num_blocks=1` is the same DiT trained end to end on the full σ range.

    Args:
        image_size (`int`, defaults to 32): side of the (square) image or latent.
        patch_size (`int`, defaults to 2): side of a patch; must divide `image_size`.
        num_channels (`int`, defaults to 3): channels of the image or latent.
        hidden_size (`int`, defaults to 384), num_hidden_layers (`int`, defaults to 12),
        num_attention_heads (`int`, defaults to 6), intermediate_size (`int`, defaults to 1536): DiT-S sizes.
        num_labels (`int`, defaults to 10): number of classes; the label embedder has one more row,
            the null label used for classifier-free guidance.
        class_dropout_prob (`float`, defaults to 0.1): probability that training replaces a label by the null
            label (see `drop_class_labels`), so the model also learns the unconditional denoiser.
        layer_norm_eps (`float`, defaults to 1e-6).
        num_blocks, layers_per_block, sigma_min, sigma_max, sigma_data, p_mean, p_std, partition,
        overlap: see `DiffusionBlocksConfig` (paper: B=3, equi-probability, γ=0.05).
    """

    model_type = "diffusion_blocks_dit"

    image_size: int = 32
    patch_size: int = 2
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    num_labels: int = 10
    class_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-6

    def __post_init__(self, **kwargs):
        require_positive_ints(self, ("image_size", "patch_size", "num_channels", "hidden_size", "num_attention_heads",
                                     "intermediate_size", "num_labels"))
        require_positive_floats(self, ("layer_norm_eps",))
        self.class_dropout_prob = check_number(
            self.class_dropout_prob, "class_dropout_prob", minimum=0, maximum=1, maximum_exclusive=True
        )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by patch_size={self.patch_size}."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        super().__post_init__(**kwargs)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


DiTSize = TransformerSize  # DiT paper, Table 1

DIT_SIZES: dict[str, DiTSize] = {
    "XS": DiTSize(hidden_size=64, num_hidden_layers=6, num_attention_heads=4),
    "S": DiTSize(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "B": DiTSize(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "L": DiTSize(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
}

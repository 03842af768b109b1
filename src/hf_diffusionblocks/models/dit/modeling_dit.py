"""DiffusionBlocks DiT. What differs from the shared machinery: patchify, the class-label
embedder with classifier-free-guidance dropout, and the image-shaped denoiser output.

Each block is a complete small DiT (patch, label and noise embedders, its layers, final layer)
that denoises images whose noise level lies in its σ interval. `forward_block` returns the
EDM-preconditioned denoised image D(z, σ, y).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel
from transformers.utils import ModelOutput

from ...argument_checks import as_integer_tensor, check_values_in_range
from ...modeling.adaln import AdaLNZeroFinalLayer, AdaLNZeroTransformerLayer
from ...modeling.block_container import run_by_owning_block
from ...modeling.embeddings import NoiseEmbedder, sincos_2d_position_embedding, unpatchify
from ...modeling.modeling_blocks import DiffusionBlocksPreTrainedModel, per_sample_level
from .configuration_dit import DiffusionBlocksDiTConfig


@dataclass
class DiffusionBlocksDiTOutput(ModelOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch, num_channels, image_size, image_size)`):
            the denoised estimate D(z, σ, y) of the clean image.
    """

    sample: torch.Tensor | None = None


def drop_class_labels(
    class_labels: torch.Tensor, num_labels: int, dropout_prob: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each label by the null label `num_labels` with probability `dropout_prob` (CFG training)."""
    if dropout_prob <= 0:
        return class_labels
    drop = torch.rand(class_labels.shape, generator=generator).to(class_labels.device) < dropout_prob
    return torch.where(drop, torch.full_like(class_labels, num_labels), class_labels)


class DiTBlock(nn.Module):
    """One DiffusionBlocks block: a complete DiT over `num_layers` layers, computing the raw network F."""

    def __init__(self, config: DiffusionBlocksDiTConfig, num_layers: int):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.grid_size = config.image_size // config.patch_size
        self.patch_embedder = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.register_buffer(
            "position_embedding",
            sincos_2d_position_embedding(config.hidden_size, self.grid_size)[None],
            persistent=False,
        )
        self.noise_embedder = NoiseEmbedder(config.hidden_size)
        # row `num_labels` is the null label of classifier-free guidance
        self.label_embedder = nn.Embedding(config.num_labels + 1, config.hidden_size)
        self.layers = nn.ModuleList(
            AdaLNZeroTransformerLayer(
                config.hidden_size,
                config.num_attention_heads,
                config.intermediate_size,
                norm_eps=config.layer_norm_eps,
            )
            for _ in range(num_layers)
        )
        self.final_layer = AdaLNZeroFinalLayer(
            config.hidden_size, config.patch_size**2 * config.num_channels, norm_eps=config.layer_norm_eps
        )

    def forward(self, scaled_sample: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """F(c_in·z, c_noise, y): `(batch, C, H, W)`, `(batch,)`, `(batch,)` → `(batch, C, H, W)`."""
        hidden_states = self.patch_embedder(scaled_sample).flatten(2).transpose(1, 2)  # (batch, grid², hidden)
        hidden_states = hidden_states + self.position_embedding
        conditioning = self.noise_embedder(c_noise) + self.label_embedder(class_labels)  # (batch, hidden)
        for layer in self.layers:
            hidden_states = layer(hidden_states, conditioning)
        return unpatchify(self.final_layer(hidden_states, conditioning), self.patch_size, self.num_channels)


class DiffusionBlocksDiTModel(DiffusionBlocksPreTrainedModel):
    """Class-conditional DiT trained as `config.num_blocks` independent denoising blocks.

    `DiffusionBlocksDiTModel(config, block_indices=[b])` builds block b alone;
    `from_pretrained(path, block_index=b)` loads it alone.
    """

    config_class = DiffusionBlocksDiTConfig
    auto_model_classes = (AutoModel,)
    _no_split_modules = ["DiTBlock"]

    def build_block(self, block_index: int, num_layers: int) -> DiTBlock:
        return DiTBlock(self.config, num_layers)

    def _check_inputs(self, sample: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None):
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if sample.ndim != 4 or tuple(sample.shape[1:]) != expected:
            raise ValueError(f"sample must have shape (batch, {', '.join(map(str, expected))}), got {tuple(sample.shape)}.")
        batch = sample.shape[0]
        sigma = per_sample_level(sigma, batch, "sigma", sample.device, sample.dtype)
        check_values_in_range(sigma, "sigma", minimum=0, minimum_exclusive=True)
        if class_labels is None:
            class_labels = torch.full((batch,), config.num_labels, dtype=torch.long, device=sample.device)
        # label num_labels is the null label of classifier-free guidance; floats are refused, not truncated
        class_labels = as_integer_tensor(class_labels, "class_labels", minimum=0, maximum=config.num_labels)
        class_labels = class_labels.to(sample.device)
        if class_labels.shape != (batch,):
            raise ValueError(f"class_labels must have shape ({batch},), got {tuple(class_labels.shape)}.")
        return sigma, class_labels

    def forward_block(
        self,
        block_index: int,
        sample: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DiffusionBlocksDiTOutput | tuple[torch.Tensor]:
        """Denoise with block `block_index` alone.

        Args:
            sample (`torch.Tensor` of shape `(batch, num_channels, image_size, image_size)`): noisy z = y + σε,
                in any floating dtype (the network runs in the model's dtype, D is returned in the sample's).
            sigma (`float` or `torch.Tensor` of shape `(batch,)`): noise levels, finite and > 0.
            class_labels (`torch.LongTensor` of shape `(batch,)`, *optional*): labels in
                `[0, num_labels)`; `num_labels` (or None) is the null label.
        Returns:
            `DiffusionBlocksDiTOutput` with `sample` = D(z, σ, y), the EDM-preconditioned estimate of y.
        """
        block = self.get_block(block_index)
        sigma, class_labels = self._check_inputs(sample, sigma, class_labels)
        preconditioning = self.config.preconditioning
        network_output = block(
            preconditioning.scale_input(sample, sigma).to(self.dtype), preconditioning.c_noise(sigma), class_labels
        )
        denoised = preconditioning.denoise(sample, network_output.to(sample.dtype), sigma)
        return DiffusionBlocksDiTOutput(sample=denoised) if return_dict else (denoised,)

    def forward(
        self,
        sample: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DiffusionBlocksDiTOutput | tuple[torch.Tensor]:
        """The assembled denoiser: every sample goes to the block that owns its σ (inference routing)."""
        sigma, class_labels = self._check_inputs(sample, sigma, class_labels)
        owners = self.config.noise_partition.block_index_for_level(sigma.detach().cpu()).to(sample.device)

        def run(block_index: int, indices: torch.Tensor | None) -> torch.Tensor:
            inputs = (sample, sigma, class_labels) if indices is None else (
                sample[indices], sigma[indices], class_labels[indices]
            )
            return self.forward_block(block_index, *inputs).sample

        denoised = run_by_owning_block(owners, run)
        if denoised is None:  # an empty batch
            denoised = torch.empty_like(sample)
        return DiffusionBlocksDiTOutput(sample=denoised) if return_dict else (denoised,)

"""DiffusionBlocks ViT classifier. What differs from the shared machinery: the patch tokens are the
conditioning, the target is a class label in a fixed embedding space, and the readout is a
classifier head at the label token whose posterior mean is the denoised estimate.

Each block is a complete small ViT (patch, label-token and noise embedders, its layers, its head):
it reads the image patches and one extra token, the noisy label z = E_y + σε scaled by c_in(σ),
is conditioned on σ by AdaLN, and returns logits of p(y | x, z). The denoised estimate is
D̂ = softmax(logits)·E (docs/method.md, 'Discrete targets'). Inference integrates the probability-flow ODE of z from σ_max
with Euler steps on the scheduler's grid (one step per block by default); the label is the argmax of
the last readout.

Where the ODE starts decides what it returns. From a random z = σ_max·ε it transports the noise to a
*sample* of p(y | x): its accuracy is the posterior's mean probability of the true class. From z = 0,
the centre of the initial distribution (the default), each step moves z to the posterior mean
Σ_k p_k E_k, and the next block's posterior p(k | x, z) ∝ p(k | x)·exp(p_k·|E_k|² / σ²) sharpens
toward the largest p_k: the trajectory ends at the posterior's *mode*, which is what a classifier
should return. Fashion-MNIST, ViT-XS, B=3, 650 steps per block: 74.8% from random ε, 81.7% from 0.
Pass a `generator` (or `initial_noise`) to sample labels instead. The steps after the first evaluate
each block at the probability-mass midpoint of its interval (`config.timestep_spacing="midpoints"`),
not at its upper boundary where it saw only the overlap's share of its training: 81.7% → 82.7%.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

from ...argument_checks import as_integer_tensor, check_num_inference_steps, check_values_in_range
from ...modeling.adaln import AdaLNZeroFinalLayer, AdaLNZeroTransformerLayer
from ...modeling.class_target_embeddings import posterior_mean, target_embedding_table
from ...modeling.embeddings import NoiseEmbedder, sincos_2d_position_embedding
from ...modeling.modeling_blocks import DiffusionBlocksPreTrainedModel, per_sample_level
from ...modeling.routed_sampling import integrate_routed_ode
from ...schedulers.scheduling_diffusion_blocks import DiffusionBlocksScheduler
from .configuration_vit import DiffusionBlocksViTConfig


@dataclass
class DiffusionBlocksViTBlockOutput(ModelOutput):
    """
    Args:
        logits (`torch.Tensor` of shape `(batch, num_labels)`): the block's readout, logits of p(y | x, z).
        denoised (`torch.Tensor` of shape `(batch, label_embedding_dim)`): D̂ = softmax(logits)·E.
    """

    logits: torch.Tensor | None = None
    denoised: torch.Tensor | None = None


class ViTBlock(nn.Module):
    """One DiffusionBlocks block: a complete ViT over `num_layers` layers with a label token."""

    def __init__(self, config: DiffusionBlocksViTConfig, num_layers: int):
        super().__init__()
        grid_size = config.image_size // config.patch_size
        self.patch_embedder = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.register_buffer(
            "position_embedding", sincos_2d_position_embedding(config.hidden_size, grid_size)[None], persistent=False
        )
        self.label_embedder = nn.Linear(config.label_embedding_dim, config.hidden_size)
        # the label token's learned identity (its "position"); with z = 0 ("standard") it is the [CLS]
        # token. Randomly initialised: a zero token stays zero through zero-initialised AdaLN layers and
        # gives the zero-initialised head no gradient.
        self.label_position_embedding = nn.Embedding(1, config.hidden_size)
        self.noise_embedder = NoiseEmbedder(config.hidden_size)
        self.layers = nn.ModuleList(
            AdaLNZeroTransformerLayer(
                config.hidden_size, config.num_attention_heads, config.intermediate_size, norm_eps=config.layer_norm_eps
            )
            for _ in range(num_layers)
        )
        self.head = AdaLNZeroFinalLayer(config.hidden_size, config.num_labels, norm_eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, scaled_labels: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """`(batch, C, H, W)` images, `(batch, d)` c_in·z, `(batch,)` c_noise → logits `(batch, num_labels)`."""
        patches = self.patch_embedder(pixel_values).flatten(2).transpose(1, 2)       # (batch, grid², hidden)
        label_token = self.label_embedder(scaled_labels).unsqueeze(1) + self.label_position_embedding.weight
        hidden_states = torch.cat([label_token, patches + self.position_embedding], dim=1)
        conditioning = self.noise_embedder(c_noise)                                   # (batch, hidden)
        for layer in self.layers:
            hidden_states = layer(hidden_states, conditioning)                        # bidirectional
        return self.head(hidden_states[:, :1], conditioning).squeeze(1)               # (batch, num_labels)


class DiffusionBlocksForImageClassification(DiffusionBlocksPreTrainedModel):
    """ViT classifier trained as `config.num_blocks` independent label-denoising blocks.

    `DiffusionBlocksForImageClassification(config, block_indices=[b])` builds block b alone;
    `from_pretrained(path, block_index=b)` loads it alone. The label-embedding table E is a
    non-persistent buffer rebuilt from the config (`label_embeddings`), so no block file stores it.
    """

    config_class = DiffusionBlocksViTConfig
    auto_model_classes = (AutoModelForImageClassification,)
    main_input_name = "pixel_values"
    _no_split_modules = ["ViTBlock"]

    def __init__(self, config: DiffusionBlocksViTConfig, block_indices: list[int] | None = None):
        super().__init__(config, block_indices=block_indices)
        table = target_embedding_table(config.num_labels, config.label_embedding_dim, config.sigma_data)
        self.register_buffer("label_embeddings", table, persistent=False)                # (num_labels, d)

    def build_block(self, block_index: int, num_layers: int) -> ViTBlock:
        return ViTBlock(self.config, num_layers)

    def build_scheduler(self) -> DiffusionBlocksScheduler:
        """The `DiffusionBlocksScheduler` with the partition these blocks were trained on."""
        return DiffusionBlocksScheduler(**self.config.scheduler_kwargs())

    def _prepare_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Check the shape; return the images in the model's dtype (float64 images classify like float32 ones)."""
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must have shape (batch, {', '.join(map(str, expected))}), got {shape}.")
        return pixel_values.to(self.dtype)

    def _check_noisy_labels(self, noisy_labels: torch.Tensor, sigma: torch.Tensor | float, batch: int) -> torch.Tensor:
        if noisy_labels.shape != (batch, self.config.label_embedding_dim):
            raise ValueError(
                f"noisy_labels must have shape ({batch}, label_embedding_dim={self.config.label_embedding_dim}), "
                f"got {tuple(noisy_labels.shape)}."
            )
        sigma = per_sample_level(sigma, batch, "sigma", noisy_labels.device)
        check_values_in_range(sigma, "sigma", minimum=0, minimum_exclusive=True)
        return sigma

    def forward_block(
        self,
        block_index: int,
        pixel_values: torch.Tensor,
        noisy_labels: torch.Tensor,
        sigma: torch.Tensor | float,
        return_dict: bool = True,
    ) -> DiffusionBlocksViTBlockOutput | tuple[torch.Tensor, torch.Tensor]:
        """Denoise the label token with block `block_index` alone.

        Args:
            block_index (`int`): the block, in `[0, num_blocks)`; block 0 owns the highest noise.
            pixel_values (`torch.Tensor` of shape `(batch, num_channels, image_size, image_size)`): images in [-1, 1].
            noisy_labels (`torch.Tensor` of shape `(batch, label_embedding_dim)`): z = E_y + σε.
            sigma (`float` or `torch.Tensor` of shape `(batch,)`): noise levels.
        Returns:
            `DiffusionBlocksViTBlockOutput` with `logits` `(batch, num_labels)` and `denoised` D̂ `(batch, d)`.
        """
        block = self.get_block(block_index)
        pixel_values = self._prepare_pixel_values(pixel_values)
        sigma = self._check_noisy_labels(noisy_labels, sigma, pixel_values.shape[0])
        preconditioning = self.config.preconditioning
        scaled = preconditioning.scale_input(noisy_labels.float(), sigma).to(pixel_values.dtype)
        logits = block(pixel_values, scaled, preconditioning.c_noise(sigma))
        denoised = posterior_mean(logits, self.label_embeddings)
        return DiffusionBlocksViTBlockOutput(logits=logits, denoised=denoised) if return_dict else (logits, denoised)

    def standard_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The end-to-end baseline (`classifier_type="standard"`): one pass, z = 0, σ = σ_max → `(batch, num_labels)`."""
        pixel_values = self._prepare_pixel_values(pixel_values)
        batch = pixel_values.shape[0]
        empty_label = pixel_values.new_zeros(batch, self.config.label_embedding_dim)
        c_noise = self.config.preconditioning.c_noise(torch.full((batch,), self.config.sigma_max, device=pixel_values.device))
        return self.get_block(0)(pixel_values, empty_label, c_noise)

    @torch.no_grad()
    def sample_labels(
        self,
        pixel_values: torch.Tensor,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        initial_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Euler steps of the label ODE from z = σ_max·ε; returns the last readout's logits `(batch, num_labels)`.

        Step i runs block `scheduler.block_indices[i]` (with `num_inference_steps = num_blocks`, step i is block i).
        ε is `initial_noise` `(batch, label_embedding_dim)` when given, else drawn from `generator`; with
        neither, ε = 0 and the trajectory ends at the posterior's mode (see the module docstring).
        """
        scheduler = self.build_scheduler()
        num_blocks = self.config.num_blocks
        num_inference_steps = num_blocks if num_inference_steps is None else check_num_inference_steps(num_inference_steps, num_blocks)
        scheduler.set_timesteps(num_inference_steps, device=pixel_values.device)
        shape = (pixel_values.shape[0], self.config.label_embedding_dim)
        if initial_noise is None and generator is None:
            initial_noise = torch.zeros(shape)
        elif initial_noise is None:
            initial_noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        elif tuple(initial_noise.shape) != shape:
            raise ValueError(f"initial_noise must have shape {shape}, got {tuple(initial_noise.shape)}.")
        noisy_labels = initial_noise.to(pixel_values.device, torch.float32) * scheduler.init_noise_sigma  # z = σ_max·ε

        def denoise(block_index, sigma, noisy_labels, evaluation_index):
            output = self.forward_block(block_index, pixel_values, noisy_labels, sigma)
            return output.denoised, output.logits

        return integrate_routed_ode(scheduler, noisy_labels, denoise)[1]

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        initial_noise: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """Classify images.

        Args:
            pixel_values (`torch.Tensor` of shape `(batch, num_channels, image_size, image_size)`): images in [-1, 1].
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices; when given, `loss`
                is the cross-entropy of the returned logits (for `"diffusion"` an evaluation loss of the
                last readout; blocks are trained with `LabelDenoisingLoss`, one block at a time).
            num_inference_steps (`int`, *optional*): Euler steps, at least `num_blocks` (the default, one per block).
            generator (`torch.Generator`, *optional*): source of the initial noise ε, to sample labels
                from the posterior. By default ε = 0: deterministic, and the label is the posterior's mode.
            initial_noise (`torch.Tensor` of shape `(batch, label_embedding_dim)`, *optional*): ε itself.
        Returns:
            `ImageClassifierOutput` with `logits` `(batch, num_labels)` and, with `labels`, `loss`.
        """
        if kwargs:
            raise ValueError(f"forward got unexpected arguments: {sorted(kwargs)}.")
        if self.config.classifier_type == "standard":
            logits = self.standard_logits(pixel_values)
        else:
            logits = self.sample_labels(pixel_values, num_inference_steps, generator, initial_noise)
        loss = None
        if labels is not None:
            labels = as_integer_tensor(labels, "labels", minimum=0, maximum=self.config.num_labels - 1)
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutput(loss=loss, logits=logits)

"""DiffusionBlocksImagePipeline: class-conditional sampling, one block per denoising step."""
# No `from __future__ import annotations`: diffusers type-checks a pipeline's components against the classes in
# its `__init__` signature, and older releases cannot read string annotations.

from typing import Literal

import torch
from diffusers import AutoencoderKL, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..argument_checks import as_integer_tensor, check_integer, check_num_inference_steps, check_number
from ..modeling.routed_sampling import integrate_routed_ode
from ..models.dit import DiffusionBlocksDiTModel
from ..schedulers import DiffusionBlocksScheduler
from .pipeline_utils import DiffusionBlocksPipelineBase

# Scheduler fields that decide which block runs which σ and how D is preconditioned.
_ROUTING_FIELDS = ("num_blocks", "sigma_min", "sigma_max", "sigma_data", "p_mean", "p_std", "partition")


def check_scheduler_matches(model_config, scheduler: DiffusionBlocksScheduler) -> None:
    """Refuse a scheduler whose partition differs from the one the blocks were trained on."""
    expected = model_config.scheduler_kwargs()
    for field in _ROUTING_FIELDS:
        if expected[field] != scheduler.config[field]:
            raise ValueError(
                f"scheduler.{field}={scheduler.config[field]!r} differs from the model's {field}={expected[field]!r}: "
                f"the blocks were trained on another partition. Build the scheduler with "
                f"DiffusionBlocksScheduler(**model.config.scheduler_kwargs())."
            )


class DiffusionBlocksImagePipeline(DiffusionBlocksPipelineBase):
    """Sample images from a DiffusionBlocks DiT.

    Every denoising step runs only the block that owns the step's σ, so a step costs the layers
    of one block (L/B) instead of all L.

    Args:
        transformer ([`DiffusionBlocksDiTModel`]): the blocks (all must be loaded to sample).
        scheduler ([`DiffusionBlocksScheduler`]): with the same partition as the transformer.
        vae ([`AutoencoderKL`], *optional*): decodes latents when the DiT was trained on latents.
    """

    model_cpu_offload_seq = "transformer->vae"
    component_classes = (DiffusionBlocksDiTModel, DiffusionBlocksScheduler)
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: DiffusionBlocksDiTModel,
        scheduler: DiffusionBlocksScheduler,
        vae: AutoencoderKL | None = None,
    ):
        super().__init__()
        check_scheduler_matches(transformer.config, scheduler)
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        self.image_processor = VaeImageProcessor(do_normalize=True)

    def _class_labels_tensor(self, class_labels, batch_size: int | None) -> torch.Tensor:
        """`(batch,)` labels on the execution device; float labels are refused, not truncated."""
        num_labels = self.transformer.config.num_labels
        batch_size = check_integer(batch_size, "batch_size", minimum=1, allow_none=True)
        if class_labels is None:
            if batch_size is None:
                raise ValueError("give class_labels, or batch_size for unconditional samples.")
            return torch.full((batch_size,), num_labels, dtype=torch.long, device=self._execution_device)
        labels = as_integer_tensor(class_labels, "class_labels", minimum=0, maximum=num_labels - 1).flatten()
        if labels.numel() == 0:
            raise ValueError(f"class_labels must be integers in [0, {num_labels - 1}], got no label.")
        if batch_size is not None and batch_size != labels.numel():
            raise ValueError(
                f"batch_size={batch_size} differs from the {labels.numel()} class_labels: give batch_size only for "
                f"unconditional samples (class_labels=None)."
            )
        return labels.to(self._execution_device)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        batch_size: int | None = None,
        guidance_scale: float = 2.0,
        num_inference_steps: int = 48,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per class label.

        Args:
            class_labels (`int`, `list[int]` or integer `torch.Tensor`, *optional*): labels in `[0, num_labels)`;
                None samples unconditionally (the null label) `batch_size` images.
            batch_size (`int`, *optional*): number of unconditional samples (with `class_labels=None`).
            guidance_scale (`float`, defaults to 2.0): classifier-free guidance weight >= 1 (paper: 2.0);
                1.0 disables guidance and halves the cost.
            num_inference_steps (`int`, defaults to 48): Euler (or Heun) steps, at least `num_blocks`; a
                multiple of `num_blocks` gives every block the same number of steps (48: 16 for each of 3 blocks).
            generator (`torch.Generator`, *optional*): for reproducible samples.
            output_type (`"pil"`, `"np"` or `"pt"`, defaults to `"pil"`).
        Returns:
            `ImagePipelineOutput` with `images`.
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}.")
        guidance_scale = check_number(guidance_scale, "guidance_scale", minimum=1.0)
        config = self.transformer.config
        num_inference_steps = check_num_inference_steps(num_inference_steps, config.num_blocks)
        labels = self._class_labels_tensor(class_labels, batch_size)
        use_guidance = guidance_scale > 1.0 and bool((labels != config.num_labels).any())
        batch = labels.shape[0]
        shape = (batch, config.num_channels, config.image_size, config.image_size)
        dtype = self.transformer.dtype

        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        sample = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        sample = sample * self.scheduler.init_noise_sigma
        model_labels = torch.cat([labels, torch.full_like(labels, config.num_labels)]) if use_guidance else labels

        def denoise(block_index, sigma, sample, evaluation_index):
            model_input = torch.cat([sample, sample]) if use_guidance else sample
            denoised = self.transformer.forward_block(block_index, model_input, sigma, model_labels).sample
            if use_guidance:
                conditional, unconditional = denoised.chunk(2)
                denoised = unconditional + guidance_scale * (conditional - unconditional)
            return denoised, None

        sample = integrate_routed_ode(self.scheduler, sample, denoise, progress=self.progress_bar)[0]

        if self.vae is not None:
            sample = self.vae.decode(sample / self.vae.config.scaling_factor).sample
        images = self.image_processor.postprocess(sample.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

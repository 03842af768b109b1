from .scheduling_diffusion_blocks import DiffusionBlocksScheduler
from .scheduling_masked_diffusion_blocks import MaskedDiffusionBlocksScheduler

__all__ = ["DiffusionBlocksScheduler", "MaskedDiffusionBlocksScheduler"]

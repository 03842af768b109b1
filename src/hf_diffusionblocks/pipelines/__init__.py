from .pipeline_image import DiffusionBlocksImagePipeline
from .pipeline_text import DiffusionBlocksTextPipeline, TextPipelineOutput

__all__ = ["DiffusionBlocksImagePipeline", "DiffusionBlocksTextPipeline", "TextPipelineOutput"]

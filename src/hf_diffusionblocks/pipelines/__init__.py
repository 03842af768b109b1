from .pipeline_image import DiffusionBlocksImagePipeline

__all__ = ["DiffusionBlocksImagePipeline"]

from .configuration_dit import DiffusionBlocksDiTConfig
from .modeling_dit import DiffusionBlocksDiTModel, DiffusionBlocksDiTOutput

__all__ = ["DiffusionBlocksDiTConfig", "DiffusionBlocksDiTModel", "DiffusionBlocksDiTOutput"]

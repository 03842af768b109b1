from .configuration_dit import DIT_SIZES, DiffusionBlocksDiTConfig, DiTSize
from .modeling_dit import DiffusionBlocksDiTModel, DiffusionBlocksDiTOutput, drop_class_labels

__all__ = ["DIT_SIZES", "DiTSize", "DiffusionBlocksDiTConfig", "DiffusionBlocksDiTModel", "DiffusionBlocksDiTOutput", "drop_class_labels"]

from .configuration_dit import DiffusionBlocksDiTConfig
from .modeling_dit import DiffusionBlocksDiTModel, DiffusionBlocksDiTOutput, drop_class_labels

__all__ = ["DiffusionBlocksDiTConfig", "DiffusionBlocksDiTModel", "DiffusionBlocksDiTOutput", "drop_class_labels"]

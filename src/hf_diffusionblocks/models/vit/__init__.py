from .configuration_vit import CLASSIFIER_TYPES, VIT_SIZES, DiffusionBlocksViTConfig, ViTSize
from ...modeling.class_target_embeddings import posterior_mean, target_embedding_table
from .losses_vit import LABEL_OBJECTIVES, LabelDenoisingLoss, classification_training_loss
from .modeling_vit import DiffusionBlocksForImageClassification, DiffusionBlocksViTBlockOutput, ViTBlock

__all__ = [
    "CLASSIFIER_TYPES",
    "LABEL_OBJECTIVES",
    "VIT_SIZES",
    "DiffusionBlocksForImageClassification",
    "DiffusionBlocksViTBlockOutput",
    "DiffusionBlocksViTConfig",
    "LabelDenoisingLoss",
    "ViTBlock",
    "ViTSize",
    "classification_training_loss",
    "posterior_mean",
    "target_embedding_table",
]

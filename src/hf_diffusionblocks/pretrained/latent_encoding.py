"""A labelled image dataset encoded once by a diffusers pipeline's VAE: the `--latents_file` of fine-tuning.

The file is safetensors with `latents` (N, C, h, w), the VAE's mean latents scaled as the pipeline decodes
them (`(mean - shift_factor) * scaling_factor`), and `class_labels` (N,) for a class-conditional transformer
(DiT). Images are resized to the side the transformer samples at (its `sample_size` times the VAE's
downsampling factor) and grayscale images are repeated over the VAE's input channels.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from ..atomic_io import atomic_write, read_json_file
from ..data import load_image_dataset

# transformer classes whose only conditioning is a class label (the encoded file then needs `class_labels`)
CLASS_CONDITIONAL_TRANSFORMERS = {"DiTTransformer2DModel": "num_embeds_ada_norm"}


def pipeline_component_config(pipeline_dir: str, component: str) -> dict:
    """`<pipeline_dir>/<component>/config.json`, or a ValueError naming what is missing."""
    if not os.path.isdir(pipeline_dir):
        raise ValueError(f"pipeline_dir {pipeline_dir!r} does not exist (a diffusers pipeline folder is expected).")
    if not os.path.isfile(os.path.join(pipeline_dir, "model_index.json")):
        raise ValueError(f"pipeline_dir {pipeline_dir!r} has no model_index.json: not a diffusers pipeline folder.")
    path = os.path.join(pipeline_dir, component, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"pipeline_dir {pipeline_dir!r} has no {component}/config.json (no {component} to encode with).")
    config = read_json_file(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return config


def encode_image_dataset(
    pipeline_dir: str,
    output_file: str,
    dataset_name: str = "digits",
    split: str = "train",
    batch_size: int = 256,
    max_samples: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """Encode `dataset_name` with the VAE of the pipeline in `pipeline_dir` and write `output_file`.

    Everything is checked before the VAE is loaded: the pipeline's VAE and class-conditional transformer,
    the dataset's labels against the transformer's number of classes, the output file's folder. Returns the
    written tensors' shapes."""
    from diffusers import AutoencoderKL

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
    if os.path.exists(output_file):
        raise ValueError(f"output_file {output_file!r} already exists; choose another name or remove it.")
    parent = os.path.dirname(os.path.abspath(output_file))
    if not os.path.isdir(parent):
        raise ValueError(f"output_file {output_file!r}: its folder {parent!r} does not exist.")
    transformer = pipeline_component_config(pipeline_dir, "transformer")
    vae_config = pipeline_component_config(pipeline_dir, "vae")
    class_name = transformer.get("_class_name")
    if class_name not in CLASS_CONDITIONAL_TRANSFORMERS:
        raise ValueError(
            f"{pipeline_dir}/transformer is a {class_name!r}; encode writes class labels for class-conditional "
            f"transformers ({sorted(CLASS_CONDITIONAL_TRANSFORMERS)}). Text-conditioned models need their text "
            f"encoders' outputs in the latents file (see examples/finetune_pretrained.py --help)."
        )
    num_classes = int(transformer.get(CLASS_CONDITIONAL_TRANSFORMERS[class_name]) or 0)
    scale = 2 ** (len(vae_config.get("block_out_channels", [None])) - 1)
    side = int(transformer["sample_size"]) * scale
    dataset = load_image_dataset(dataset_name, split, image_size=side)
    images, labels = dataset.images, dataset.labels
    if max_samples is not None:
        images, labels = images[:max_samples], labels[:max_samples]
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"dataset {dataset_name!r} has labels up to {int(labels.max())}, but {pipeline_dir}/transformer "
                         f"knows {num_classes} classes.")
    in_channels = int(vae_config.get("in_channels", 3))
    if images.shape[1] not in (1, in_channels):
        raise ValueError(f"dataset {dataset_name!r} has {images.shape[1]} channels; the VAE takes {in_channels}.")
    images = images.expand(-1, in_channels, -1, -1) if images.shape[1] == 1 else images
    vae = AutoencoderKL.from_pretrained(pipeline_dir, subfolder="vae").eval()
    scaling, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    with torch.no_grad():
        latents = torch.cat([
            (vae.encode(images[start : start + batch_size]).latent_dist.mean - shift) * scaling
            for start in range(0, images.shape[0], batch_size)
        ])
    tensors = {"latents": latents.float().contiguous(), "class_labels": labels.long().contiguous()}
    atomic_write(output_file, lambda temporary: save_file(tensors, temporary, metadata={
        "dataset": dataset_name, "split": split, "pipeline": os.path.basename(os.path.abspath(pipeline_dir))}))
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}

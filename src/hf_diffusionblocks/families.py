"""The model families of the library, each named once: what the CLI, the Hub code, model cards and tests use.

A family is a config class, a model class (a `DiffusionBlocksPreTrainedModel`), the transformers Auto
classes that resolve it, the loss its blocks are trained with, how it samples (a diffusers pipeline,
or a method of the model: `generate` for language models, `forward` for the classifier), what its model
card says (description, Hub tags and `pipeline_tag`; its usage snippets are files of `templates/`).

Adding a family means adding its model folder under `models/` and one `ModelFamily` entry to
`FAMILIES`: the package registers it with the Auto classes, `hf-diffusionblocks info`/`assemble`
handle its folders, `write_model_card` writes its card, saved folders load with
`trust_remote_code=True`, and the contract test (`tests/test_family_contract.py`, with a tiny config of
the family in `tests/family_fixtures.py`) runs over it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig

from .atomic_io import read_json_file
from .losses import BlockDenoisingLoss
from .modeling.configuration_blocks import BlockPartitionedConfig
from .modeling.modeling_blocks import DiffusionBlocksPreTrainedModel
from .models.causal_lm import CausalLMDenoisingLoss, DiffusionBlocksCausalLMConfig, DiffusionBlocksForCausalLM
from .models.dit import DiffusionBlocksDiTConfig, DiffusionBlocksDiTModel
from .models.masked_lm import DiffusionBlocksForMaskedLM, DiffusionBlocksMaskedLMConfig, MaskedDiffusionLoss
from .models.recurrent import (
    DiffusionBlocksRecurrentConfig,
    DiffusionBlocksRecurrentForCausalLM,
    RecurrentDenoisingLoss,
)
from .models.vit import (
    DiffusionBlocksForImageClassification,
    DiffusionBlocksViTConfig,
    LabelDenoisingLoss,
    classification_training_loss,
)
from .pipelines import DiffusionBlocksImagePipeline, DiffusionBlocksTextPipeline
from .schedulers import DiffusionBlocksScheduler, MaskedDiffusionBlocksScheduler
from .tokenization_char import CharacterTokenizer


def package_template(name: str) -> str:
    """The text of `templates/<name>` shipped with the package (card templates and usage snippets)."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _signature_default(function: Callable, argument: str) -> Any:
    """The default value of `argument` in `function`'s signature (the value a call without it uses)."""
    return inspect.signature(function).parameters[argument].default


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its classes, how it samples and what its model card says.

    Args:
        name (`str`): the short name the training scripts use (`examples/train_<name>.py`) and cards are tagged with.
        config_class (`type`): its `BlockPartitionedConfig` subclass (its `model_type` identifies saved folders).
        model_class (`type`): its `DiffusionBlocksPreTrainedModel` subclass.
        loss_class (`type`): the loss one block is trained with.
        block_loss (`Callable`): `(model, block_index, batch, generator) -> loss`: `loss_class` applied to a batch
            of `example_batch`'s form; its gradient reaches block `block_index` only.
        example_batch (`Callable`): `(config, batch_size, generator) -> dict` of random training inputs of the
            right shapes and ranges (for tests and benchmarks; real data has the same keys).
        pipeline_class (`type`, *optional*): the diffusers pipeline that samples from the model; None when the
            model samples itself (`sampling_method`).
        sampling_method (`str`): `"__call__"` of the pipeline, or the model's method that samples
            (`"generate"`, or `"forward"` for the classifier, whose forward runs the label ODE).
        steps_argument (`str`): the sampling call's argument that sets the number of steps (`num_inference_steps`,
            `num_iterations`).
        default_steps (`Callable[[config], int]`): the number of steps a call without `steps_argument` uses, read
            from where the code takes it (a signature default or a config field), so a card can never disagree.
        description (`str`), tags (`tuple[str, ...]`), pipeline_tag (`str`): what the model card says; the
            pipeline tag is one of the Hub's task names.
        pipeline_components (`Callable`, *optional*): `(model, **given) -> dict` of the pipeline's components
            besides the model (scheduler, tokenizer, ...); `given` overrides.

    The card's usage snippets are the package's `templates/usage_<name>.md` (with the library imported) and
    `templates/native_usage_<name>.md` (through transformers' or diffusers' own classes and
    `trust_remote_code=True`): Jinja text rendered with the card's variables (`repo_id`, `subfolder_argument`,
    `default_steps`, `has_tokenizer`, ...).
    """

    name: str
    config_class: type[BlockPartitionedConfig]
    model_class: type[DiffusionBlocksPreTrainedModel]
    loss_class: type
    block_loss: Callable[..., torch.Tensor]
    example_batch: Callable[..., dict[str, torch.Tensor]]
    pipeline_class: type | None
    sampling_method: str
    steps_argument: str
    default_steps: Callable[[BlockPartitionedConfig], int]
    description: str
    tags: tuple[str, ...]
    pipeline_tag: str
    pipeline_components: Callable[..., dict[str, Any]] | None = None

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def auto_classes(self) -> tuple[type, ...]:
        """transformers Auto classes that resolve `model_class` (the model class declares them, for `auto_map`);
        the first is the one the model card names first."""
        return self.model_class.auto_model_classes

    @property
    def usage(self) -> str:
        """Jinja snippet of the card's "How to use" section, with the library imported."""
        return package_template(f"usage_{self.name}.md")

    @property
    def native_usage(self) -> str:
        """Jinja snippet of the same, through transformers' or diffusers' own classes (`trust_remote_code=True`)."""
        return package_template(f"native_usage_{self.name}.md")

    def build_pipeline(self, model: DiffusionBlocksPreTrainedModel, **components: Any):
        """The family's pipeline around `model`; other components default to the ones that match its config."""
        if self.pipeline_class is None or self.pipeline_components is None:
            raise ValueError(f"family {self.name!r} samples with {self.model_class.__name__}.{self.sampling_method}, not a pipeline.")
        return self.pipeline_class(model, **self.pipeline_components(model, **components))


# ---- the five families -----------------------------------------------------------------------------


def _random_images(config, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    shape = (batch_size, config.num_channels, config.image_size, config.image_size)
    return {
        "pixel_values": torch.randn(shape, generator=generator).clamp(-1, 1),
        "labels": torch.randint(0, config.num_labels, (batch_size,), generator=generator),
    }


def _random_tokens(config, batch_size: int, generator: torch.Generator | None, length: int, high: int) -> dict:
    return {"input_ids": torch.randint(0, high, (batch_size, length), generator=generator)}


def _dit_loss(model, block_index: int, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
    loss = BlockDenoisingLoss(model.config.noise_partition, model.config.preconditioning)
    return loss(model, block_index, batch["pixel_values"], generator, class_labels=batch["labels"])



def _image_pipeline_components(model: DiffusionBlocksDiTModel, **given: Any) -> dict[str, Any]:
    return {"scheduler": DiffusionBlocksScheduler(**model.config.scheduler_kwargs()), **given}


def _text_pipeline_components(model: DiffusionBlocksForMaskedLM, **given: Any) -> dict[str, Any]:
    if "tokenizer" not in given:
        raise ValueError("the text pipeline needs the tokenizer the model was trained with: pass tokenizer=...")
    return {"scheduler": model.build_scheduler(), **given}


DIT = ModelFamily(
    name="dit",
    config_class=DiffusionBlocksDiTConfig,
    model_class=DiffusionBlocksDiTModel,
    loss_class=BlockDenoisingLoss,
    block_loss=_dit_loss,
    example_batch=_random_images,
    pipeline_class=DiffusionBlocksImagePipeline,
    sampling_method="__call__",
    steps_argument="num_inference_steps",
    default_steps=lambda config: _signature_default(DiffusionBlocksImagePipeline.__call__, "num_inference_steps"),
    description="a class-conditional diffusion transformer (DiT) for images",
    # The Hub has no class-conditional task: its image-generation task without a text or image input
    # is "unconditional-image-generation"; the class label is an integer input (None gives the null label).
    tags=("image-generation", "class-conditional-image-generation"),
    pipeline_tag="unconditional-image-generation",
    pipeline_components=_image_pipeline_components,
)

MASKED_LM = ModelFamily(
    name="mdm",
    config_class=DiffusionBlocksMaskedLMConfig,
    model_class=DiffusionBlocksForMaskedLM,
    loss_class=MaskedDiffusionLoss,
    block_loss=lambda model, block_index, batch, generator: MaskedDiffusionLoss(
        model.build_scheduler(), model.config.mask_token_id
    )(model, block_index, batch["input_ids"], generator),
    example_batch=lambda config, batch_size, generator=None: _random_tokens(
        config, batch_size, generator, config.max_position_embeddings, config.mask_token_id
    ),
    pipeline_class=DiffusionBlocksTextPipeline,
    sampling_method="__call__",
    steps_argument="num_inference_steps",
    default_steps=lambda config: _signature_default(DiffusionBlocksTextPipeline.__call__, "num_inference_steps"),
    description="a masked diffusion language model",
    tags=("text-generation", "masked-diffusion", "fill-mask"),
    pipeline_tag="text-generation",
    pipeline_components=_text_pipeline_components,
)

CAUSAL_LM = ModelFamily(
    name="ar",
    config_class=DiffusionBlocksCausalLMConfig,
    model_class=DiffusionBlocksForCausalLM,
    loss_class=CausalLMDenoisingLoss,
    block_loss=lambda model, block_index, batch, generator: CausalLMDenoisingLoss(model.config)(
        model, block_index, batch["input_ids"], generator
    ),
    example_batch=lambda config, batch_size, generator=None: _random_tokens(
        config, batch_size, generator, config.max_position_embeddings, config.vocab_size
    ),
    pipeline_class=None,
    sampling_method="generate",
    steps_argument="num_inference_steps",
    default_steps=lambda config: config.default_num_inference_steps,
    description="an autoregressive transformer language model (each next token denoised through the blocks)",
    tags=("text-generation",),
    pipeline_tag="text-generation",
)

VIT = ModelFamily(
    name="vit",
    config_class=DiffusionBlocksViTConfig,
    model_class=DiffusionBlocksForImageClassification,
    loss_class=LabelDenoisingLoss,
    block_loss=lambda model, block_index, batch, generator: classification_training_loss(
        model, block_index, batch["pixel_values"], batch["labels"], generator
    ),
    example_batch=_random_images,
    pipeline_class=None,
    sampling_method="forward",
    steps_argument="num_inference_steps",
    default_steps=lambda config: config.num_blocks,
    description="a Vision Transformer classifier (the label denoised through the blocks)",
    tags=("image-classification",),
    pipeline_tag="image-classification",
)

RECURRENT = ModelFamily(
    name="recurrent",
    config_class=DiffusionBlocksRecurrentConfig,
    model_class=DiffusionBlocksRecurrentForCausalLM,
    loss_class=RecurrentDenoisingLoss,
    block_loss=lambda model, block_index, batch, generator: RecurrentDenoisingLoss(model.config.noise_partition)(
        model, block_index, batch["input_ids"], generator
    ),
    # a context of max_position_embeddings tokens and, shifted by one, its targets
    example_batch=lambda config, batch_size, generator=None: _random_tokens(
        config, batch_size, generator, config.max_position_embeddings + 1, config.vocab_size
    ),
    pipeline_class=None,
    sampling_method="generate",
    steps_argument="num_iterations",
    default_steps=lambda config: config.num_iterations,
    description="a recurrent-depth language model (prelude / core iterated K times / coda)",
    tags=("text-generation", "recurrent-depth"),
    pipeline_tag="text-generation",
)

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (DIT, MASKED_LM, CAUSAL_LM, VIT, RECURRENT)}

# Classes a saved folder may name (model_index.json, auto_map): every family's, and the other pipeline components.
LOADABLE_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for family in FAMILIES.values()
    for cls in (family.config_class, family.model_class, family.pipeline_class)
    if cls is not None
}
LOADABLE_CLASSES.update(
    {cls.__name__: cls for cls in (DiffusionBlocksScheduler, MaskedDiffusionBlocksScheduler, CharacterTokenizer)}
)


def family_by_name(name: str) -> ModelFamily:
    """The family of short name `name` (`"dit"`, `"mdm"`, `"ar"`, `"vit"`, `"recurrent"`)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {name!r}.") from None


def family_for_model_type(model_type: str | None) -> ModelFamily | None:
    """The family whose config has `model_type`, or None."""
    return next((family for family in FAMILIES.values() if family.model_type == model_type), None)


def find_family_for_config(config: PreTrainedConfig) -> ModelFamily | None:
    """The family of a config instance (its class, or a subclass of it), or None."""
    return next((family for family in FAMILIES.values() if isinstance(config, family.config_class)), None)


def family_for_config(config: PreTrainedConfig) -> ModelFamily:
    """The family of a config instance; a `ValueError` for a config of no family."""
    family = find_family_for_config(config)
    if family is None:
        raise ValueError(
            f"{type(config).__name__} belongs to no DiffusionBlocks family (families: {sorted(FAMILIES)}); "
            f"a new family needs an entry in hf_diffusionblocks.families.FAMILIES."
        )
    return family


def load_config_file(config_path: str) -> BlockPartitionedConfig:
    """The block-partitioned config in `config_path`, built with the class of the family of its `model_type`."""
    config_dict = read_json_file(config_path)
    model_type = config_dict.get("model_type") if isinstance(config_dict, dict) else None
    family = family_for_model_type(model_type)
    if family is None:
        known = sorted(family.model_type for family in FAMILIES.values())
        raise ValueError(
            f"{config_path} has model_type={model_type!r}, which is not a DiffusionBlocks family "
            f"(model types: {known})."
        )
    config_dict.pop("transformers_version", None)
    try:
        # the config's own checks bound it (num_blocks <= num_hidden_layers and MAX_NUM_BLOCKS) before anything
        # asks for its blocks' files
        return family.config_class.from_dict(config_dict)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{config_path}: {error}") from None


def model_class_for_config(config: PreTrainedConfig) -> type[DiffusionBlocksPreTrainedModel]:
    """The model class of this config's family."""
    return family_for_config(config).model_class


def register_auto_classes() -> None:
    """Register every family's config and model with transformers' Auto classes (idempotent)."""
    for family in FAMILIES.values():
        AutoConfig.register(family.model_type, family.config_class, exist_ok=True)
        for auto_class in family.auto_classes:
            auto_class.register(family.config_class, family.model_class, exist_ok=True)
    # lets AutoTokenizer resolve tokenizer_class='CharacterTokenizer' (causal LM folders trained with --tokenizer char)
    AutoTokenizer.register(DiffusionBlocksCausalLMConfig, tokenizer_class=CharacterTokenizer, exist_ok=True)

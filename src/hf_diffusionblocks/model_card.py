"""Model cards (README.md): of DiffusionBlocks pipeline and model folders, and of converted pretrained folders.

The card is rendered with `huggingface_hub.ModelCard` from the package's Jinja template
(`hf_diffusionblocks/templates/model_card.md`; `model_cards/` in a source checkout points to it).
Its YAML front-matter comes from `ModelCardData`; its body shows the partition of the blocks, which
blocks are present and how long each was trained (from the block files' safetensors metadata, read
without loading weights), the data, the metrics, how to sample (with the library imported, and with
transformers' or diffusers' own classes and `trust_remote_code=True`), how to load a single block, and
the paper's citation. What a family's card says (tags, Hub pipeline tag, usage snippets, the default
number of sampling steps) comes from its entry in `hf_diffusionblocks.families`.

The card of a folder written by `hf-diffusionblocks convert` (`write_converted_model_card`, from
`templates/converted_model_card.md`) is rewritten after every fine-tuning run from what the folder holds:
every block file's metadata says whether it is the converted original (its digest equals the conversion's)
or fine-tuned (and for how many steps), and `lora/block_<b>.safetensors` files are listed with their rank.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import jinja2
from huggingface_hub import ModelCard, ModelCardData

from .atomic_io import atomic_write_text, read_json_file
from .families import (
    LOADABLE_CLASSES,
    ModelFamily,
    family_by_name,
    family_for_config,
    load_config_file,
    package_template,
)
from .hub_download import BlockFileHeader, HubOptions, read_safetensors_header
from .modeling.block_checkpoint import CONFIG_NAME, block_weights_name, read_block_metadata, tensors_digest
from .modeling.configuration_blocks import BlockPartitionedConfig
from .partition import format_partition_table
from .pipelines.pipeline_utils import MODEL_INDEX_NAME
from .pretrained.converted_folder import ConversionManifest, load_tensors, read_manifest
from .pretrained.lora import read_lora_settings
from .remote_code import LIBRARY_NAME as LIBRARY_MODULE
from .remote_code import REMOTE_CODE_FILE, library_class

LIBRARY_NAME = "hf-diffusionblocks"
# blockwise (the method), end_to_end (the baseline of the same architecture), bptt (the recurrent family's
# truncated-backpropagation baseline)
TRAINING_MODES = ("blockwise", "end_to_end", "bptt")
MODEL_SUBFOLDER = "transformer"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
README_NAME = "README.md"


@dataclass(frozen=True)
class BlockStatus:
    """One block of a checkpoint: its layers, and its file's header if the file is present."""

    block_index: int
    layers: str
    header: BlockFileHeader | None

    @property
    def present(self) -> bool:
        return self.header is not None

    @property
    def training_steps(self) -> int | None:
        return self.header.training_steps if self.header is not None else None

    @property
    def parameter_count(self) -> int | None:
        return self.header.parameter_count if self.header is not None else None


def layer_ranges(layers_per_block: list[int]) -> list[str]:
    """`[2, 2, 2]` → `["0-1", "2-3", "4-5"]`: the layers each block owns."""
    ranges, first = [], 0
    for count in layers_per_block:
        ranges.append(f"{first}-{first + count - 1}")
        first += count
    return ranges


def read_block_statuses(
    path_or_repo: str | os.PathLike, config: BlockPartitionedConfig, options: HubOptions = HubOptions()
) -> list[BlockStatus]:
    """Presence, training steps and parameter count of every block, from the block files' headers only."""
    ranges = layer_ranges(config.resolved_layers_per_block)
    return [
        BlockStatus(
            block_index,
            ranges[block_index],
            read_safetensors_header(path_or_repo, block_weights_name(block_index), options),
        )
        for block_index in range(config.num_blocks)
    ]


def partition_table(config: BlockPartitionedConfig) -> str:
    """The partition table of a config with a continuous-noise partition; blocks ↔ layers otherwise."""
    layers_per_block = config.resolved_layers_per_block
    if hasattr(config, "noise_partition"):
        return format_partition_table(config.noise_partition, layers_per_block)
    rows = [f"num_blocks={config.num_blocks}", f"{'block':>5}  {'layers':>9}"]
    rows += [f"{index:>5}  {layers:>9}" for index, layers in enumerate(layer_ranges(layers_per_block))]
    return "\n".join(rows)


def template_text(template: str | os.PathLike | None = None) -> str:
    """The Jinja template in file `template`, or the one shipped with the package."""
    if template is not None:
        with open(template, encoding="utf-8") as file:
            return file.read()
    return package_template("model_card.md")


def _pipeline_class(output_dir: str) -> type | None:
    """The pipeline class named by `model_index.json` (one of this library's), or None for a model folder."""
    index_path = os.path.join(output_dir, MODEL_INDEX_NAME)
    if not os.path.isfile(index_path):
        return None
    model_index = read_json_file(index_path)
    if not isinstance(model_index, dict):
        raise ValueError(f"{index_path} holds JSON but not an object of pipeline components.")
    class_name = model_index.get("_class_name")
    library, class_name = class_name if isinstance(class_name, list) and len(class_name) == 2 else (LIBRARY_MODULE, class_name)
    return library_class(library, str(class_name), index_path, LOADABLE_CLASSES)


def _check_sample_grid(output_dir: str, sample_grid: str | None) -> str | None:
    """A URL, or a path relative to `output_dir` of an image that exists there."""
    if sample_grid is None or sample_grid.startswith(("http://", "https://")):
        return sample_grid
    relative = os.path.relpath(sample_grid, output_dir) if os.path.isabs(sample_grid) else sample_grid
    if not os.path.isfile(os.path.join(output_dir, relative)) or relative.startswith(".."):
        raise ValueError(f"sample_grid={sample_grid!r} must be a URL or an image file inside {output_dir!r}.")
    return relative.replace(os.sep, "/")


def _format_metrics(metrics: dict[str, Any] | None) -> dict[str, str]:
    return {
        name: f"{value:.4g}" if isinstance(value, float) else str(value)
        for name, value in (metrics or {}).items()
    }


def build_card_data(
    family: ModelFamily, dataset: str | None, pipeline_tag_override: str | None = None
) -> ModelCardData:
    """YAML front-matter: library, tags (method, family, task), datasets and the Hub pipeline tag."""
    tags = ["diffusion-blocks", "block-wise-training", family.name, *family.tags]
    return ModelCardData(
        library_name=LIBRARY_NAME,
        tags=list(dict.fromkeys(tags)),
        datasets=[dataset] if dataset else None,
        pipeline_tag=pipeline_tag_override or family.pipeline_tag,
    )


def render_usage(family: ModelFamily, variables: dict[str, Any]) -> tuple[str, str]:
    """The family's usage snippets (library imported; transformers/diffusers alone), rendered for this folder."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    library = environment.from_string(family.usage).render(**variables, trust_argument="")
    native = environment.from_string(family.native_usage).render(**variables, trust_argument=", trust_remote_code=True")
    return library.strip(), native.strip()


def render_model_card(
    output_dir: str | os.PathLike,
    *,
    family: str | None = None,
    dataset: str,
    training_mode: str,
    metrics: dict[str, Any] | None = None,
    sample_grid: str | None = None,
    extra: dict[str, Any] | None = None,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of a pipeline folder (with `transformer/`) or a model folder, without writing it.

    Arguments as `write_model_card`.
    """
    output_dir = str(output_dir)
    if training_mode not in TRAINING_MODES:
        raise ValueError(f"training_mode must be one of {list(TRAINING_MODES)}, got {training_mode!r}.")
    pipeline_class = _pipeline_class(output_dir)
    model_dir = os.path.join(output_dir, MODEL_SUBFOLDER) if pipeline_class is not None else output_dir
    if not os.path.isfile(os.path.join(model_dir, CONFIG_NAME)):
        raise ValueError(
            f"no {CONFIG_NAME} in {model_dir!r}: write the model (save_pretrained) before its card."
        )
    config = load_config_file(os.path.join(model_dir, CONFIG_NAME))
    model_family = family_for_config(config)
    if family is not None and family_by_name(family) is not model_family:
        raise ValueError(
            f"family={family!r}, but {model_dir!r} holds a {config.model_type} model (family {model_family.name!r})."
        )
    blocks = read_block_statuses(model_dir, config)
    repo_id = repo_id or f"your-username/{os.path.basename(os.path.abspath(output_dir))}"
    variables = dict(
        repo_id=repo_id,
        config=config,
        num_blocks=config.num_blocks,
        model_class=model_family.model_class.__name__,
        pipeline_class=pipeline_class.__name__ if pipeline_class is not None else None,
        subfolder_argument=f', subfolder="{MODEL_SUBFOLDER}"' if pipeline_class is not None else "",
        default_steps=model_family.default_steps(config),
        has_tokenizer=os.path.isfile(os.path.join(model_dir, TOKENIZER_CONFIG_NAME)),
    )
    usage, native_usage = render_usage(model_family, variables)
    return ModelCard.from_template(
        build_card_data(model_family, dataset),
        template_str=template_text(template),
        model_name=repo_id.split("/")[-1],
        family=model_family.name,
        family_description=model_family.description,
        model_type=config.model_type,
        num_hidden_layers=config.num_hidden_layers,
        training_mode=training_mode,
        dataset=dataset,
        partition_table=partition_table(config),
        blocks=blocks,
        present_blocks=[block.block_index for block in blocks if block.present],
        missing_blocks=[block.block_index for block in blocks if not block.present],
        metrics=_format_metrics(metrics),
        sample_grid=_check_sample_grid(output_dir, sample_grid),
        extra=extra or {},
        sampling_entry=(
            f"{pipeline_class.__name__}.__call__" if pipeline_class is not None
            else f"{model_family.model_class.__name__}.{model_family.sampling_method}"
        ),
        steps_argument=model_family.steps_argument,
        usage=usage,
        native_usage=native_usage,
        remote_code_file=REMOTE_CODE_FILE,
        **variables,
    )


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    family: str | None = None,
    dataset: str,
    training_mode: str,
    metrics: dict[str, Any] | None = None,
    sample_grid: str | None = None,
    extra: dict[str, Any] | None = None,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
) -> str:
    """Render and write `README.md` in a pipeline folder (with `transformer/`) or a model folder.

    Args:
        output_dir (`str` or `os.PathLike`): the folder written by training (`save_pretrained`).
        family (`str`, *optional*): the model family (`"dit"`, `"mdm"`, `"ar"`, `"vit"`, `"recurrent"`; see
            `hf_diffusionblocks.families`); found from the folder's config when omitted, checked against it
            when given. It sets the tags, the Hub pipeline tag and the usage snippets.
        dataset (`str`): the training data (a Hub dataset id, or a description of local data).
        training_mode (`str`): `"blockwise"`, `"end_to_end"`, or `"bptt"` (the recurrent family's baseline).
        metrics (`dict`, *optional*): metric name → value (floats are shown with 4 significant digits).
        sample_grid (`str`, *optional*): a URL, or the path of an image inside `output_dir`.
        extra (`dict`, *optional*): more training details (hyperparameters, hardware, ...), listed as is.
        repo_id (`str`, *optional*): the Hub repo named in the loading snippets.
        template (`str`, *optional*): another Jinja template file; the package's by default.
    Returns:
        `str`: the path of the written `README.md`.
    """
    card = render_model_card(
        output_dir,
        family=family,
        dataset=dataset,
        training_mode=training_mode,
        metrics=metrics,
        sample_grid=sample_grid,
        extra=extra,
        repo_id=repo_id,
        template=template,
    )
    path = os.path.join(str(output_dir), README_NAME)
    atomic_write_text(path, str(card))
    return path


# ---- converted pretrained folders ----------------------------------------------------------------

# the diffusers pipeline each converted transformer class runs in, named in the card's snippet
_SOURCE_PIPELINES = {
    "DiTTransformer2DModel": "DiTPipeline",
    "PixArtTransformer2DModel": "PixArtSigmaPipeline",
    "SD3Transformer2DModel": "StableDiffusion3Pipeline",
    "FluxTransformer2DModel": "FluxPipeline",
}


def converted_block_rows(folder: str, manifest: ConversionManifest, lora_folder: str = "lora") -> list[str]:
    """The card's table of blocks: layers, timesteps, whether the weights are converted or fine-tuned, LoRA."""
    rows = ["| block | layers | timesteps | weights | LoRA |", "|---:|---|---|---|---|"]
    for b in range(manifest.num_blocks):
        low, high = manifest.time_partition.block_interval(b)
        path = os.path.join(folder, block_weights_name(b))
        if not os.path.isfile(path):
            weights = "missing"
        elif tensors_digest(load_tensors(path)) == manifest.block_sha256[b]:
            weights = "converted (unchanged)"
        else:
            steps = read_block_metadata(path)["training_steps"]
            weights = f"fine-tuned ({steps} steps)" if steps is not None else "changed"
        adapter = os.path.join(folder, lora_folder, block_weights_name(b))
        if os.path.isfile(adapter):
            settings, steps = read_lora_settings(adapter), read_block_metadata(adapter)["training_steps"]
            lora = f"rank {settings.rank}, {steps} steps"
        else:
            lora = "-"
        rows.append(f"| {b} | {manifest.describe_block_layers(b)} | [{low:.1f}, {high:.1f}) | {weights} | {lora} |")
    return rows


def render_converted_model_card(
    folder: str, figures: dict[str, Any] | None = None, steps_line: str | None = None, pipeline_folder: bool = False
) -> str:
    """The card of a converted folder (see the module docstring); `figures` are listed as JSON, `steps_line`
    (how many sampling steps each block runs) follows the partition table; `pipeline_folder`: the folder is
    the transformer of a converted pipeline folder, loaded whole by `DiffusionPipeline.from_pretrained`."""
    manifest = read_manifest(folder)
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return environment.from_string(package_template("converted_model_card.md")).render(
        source_class=manifest.source_class,
        source=manifest.source or "unknown",
        num_blocks=manifest.num_blocks,
        num_layers=sum(manifest.layers_per_block),
        layers_per_block=manifest.layers_per_block,
        layer_list=manifest.layer_stack.describe(),
        partition_table=manifest.partition_table(),
        steps_line=steps_line,
        block_rows="\n".join(converted_block_rows(folder, manifest)),
        pipeline=_SOURCE_PIPELINES[manifest.source_class],
        routed=f"Routed{manifest.source_class}",
        has_lora=os.path.isdir(os.path.join(folder, "lora")),
        pipeline_folder=pipeline_folder,
        figures=json.dumps(figures, indent=2, sort_keys=True) if figures else None,
    )


def write_converted_model_card(
    folder: str, figures: dict[str, Any] | None = None, steps_line: str | None = None, pipeline_dir: str | None = None
) -> str:
    """Render and write `README.md` of a converted folder (atomically); returns its path.

    With `pipeline_dir` (the converted pipeline folder that holds `folder`), the card shows the pipeline's
    native loading and is written at the pipeline's root too, where the Hub shows it."""
    card = render_converted_model_card(folder, figures, steps_line, pipeline_folder=pipeline_dir is not None)
    path = os.path.join(folder, README_NAME)
    atomic_write_text(path, card)
    if pipeline_dir is not None:
        atomic_write_text(os.path.join(pipeline_dir, README_NAME), card)
    return path

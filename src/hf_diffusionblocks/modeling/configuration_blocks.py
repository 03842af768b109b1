"""Configuration fields shared by every DiffusionBlocks family: the blocks and their partition."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from ..argument_checks import check_integer, check_number
from ..partition import MAX_NUM_BLOCKS, PARTITION_FIELDS, NoisePartition, assign_layers_to_blocks, partition_from
from ..preconditioning import EDMPreconditioning

# Keys of `to_dict()` that describe where/how a config was saved, not what the model is.
_NON_ARCHITECTURE_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype", "auto_map"}
)


def require_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    """Raise a `ValueError` naming the first field of `names` that is not an integer >= 1 (bools refused)."""
    for name in names:
        check_integer(getattr(config, name), name, minimum=1)


def require_positive_floats(config: Any, names: tuple[str, ...]) -> None:
    """Raise a `ValueError` naming the first field of `names` that is not a finite number > 0 (epsilons,
    rotary bases); store the others as `float` (JSON keeps `10000` an int otherwise)."""
    for name in names:
        setattr(config, name, check_number(getattr(config, name), name, minimum=0, minimum_exclusive=True))


def require_optional_ints(config: Any, names: tuple[str, ...], minimum: int, maximum: int | None = None) -> None:
    """Raise a `ValueError` naming the first field of `names` that is neither None nor an integer in
    `[minimum, maximum]` (token ids, seeds)."""
    for name in names:
        check_integer(getattr(config, name), name, minimum=minimum, maximum=maximum, allow_none=True)


def _as_json(payload: dict[str, Any]) -> dict[str, Any]:
    """The value after a JSON round trip (int dict keys become strings, tuples lists)."""
    return json.loads(json.dumps(payload, sort_keys=True))


def _resolved_layer_split(fields: dict[str, Any], defaults: dict[str, Any]) -> list[int] | None:
    """The layer counts of a config's fields (defaults where absent), or None when they do not resolve."""
    try:
        return assign_layers_to_blocks(fields.get("num_hidden_layers", defaults.get("num_hidden_layers")),
                                       fields.get("num_blocks", defaults.get("num_blocks")),
                                       fields.get("layers_per_block", defaults.get("layers_per_block")))
    except (ValueError, TypeError):
        return None


class BlockPartitionedConfig(PreTrainedConfig):
    """Fields every block-partitioned model has.

    Args:
        num_hidden_layers (`int`, defaults to 12): total number of transformer layers L.
        num_blocks (`int`, defaults to 3): number of blocks B; blocks own contiguous groups of layers.
        layers_per_block (`list[int]`, *optional*): explicit layer counts per block (summing to L);
            without it L must be divisible by B.
    """

    num_hidden_layers: int = 12
    num_blocks: int = 3
    layers_per_block: list[int] | None = None

    def __post_init__(self, **kwargs):
        check_integer(self.num_blocks, "num_blocks", minimum=1, maximum=MAX_NUM_BLOCKS)
        require_positive_ints(self, ("num_hidden_layers",))
        if self.layers_per_block is not None:
            self.layers_per_block = list(self.layers_per_block)
        assign_layers_to_blocks(self.num_hidden_layers, self.num_blocks, self.layers_per_block)
        super().__post_init__(**kwargs)

    @property
    def resolved_layers_per_block(self) -> list[int]:
        """Layer count of every block."""
        return assign_layers_to_blocks(self.num_hidden_layers, self.num_blocks, self.layers_per_block)

    # Fields that only steer inference (a family lists them): blocks trained apart need not agree on them.
    inference_only_fields: ClassVar[frozenset[str]] = frozenset()

    def architecture_dict(self) -> dict[str, Any]:
        """`to_dict()` without the keys that say where or how the config was saved, or that only steer
        inference, as JSON would store it."""
        ignored = _NON_ARCHITECTURE_KEYS | self.inference_only_fields
        return _as_json({key: value for key, value in self.to_dict().items() if key not in ignored})

    def differing_fields(self, other: "BlockPartitionedConfig | dict[str, Any]") -> list[str]:
        """Names of the architecture fields whose values differ from `other`'s.

        A field only one side records (a block saved before the field existed) is compared with the
        field's default, which is what the older version behaved as. `layers_per_block` is compared as the
        layer counts it resolves to: `None` (an even split) equals the list of the same counts."""
        mine = self.architecture_dict()
        ignored = _NON_ARCHITECTURE_KEYS | self.inference_only_fields
        theirs = other.architecture_dict() if isinstance(other, BlockPartitionedConfig) else _as_json(
            {key: value for key, value in other.items() if key not in ignored}
        )
        defaults = self.field_defaults()
        differing = sorted(
            key for key in mine.keys() | theirs.keys()
            if mine.get(key, defaults.get(key)) != theirs.get(key, defaults.get(key))
        )
        if "layers_per_block" in differing:
            split = _resolved_layer_split(mine, defaults)
            if split is not None and split == _resolved_layer_split(theirs, defaults):
                differing.remove("layers_per_block")
        return differing

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """The declared default of every annotated config field, as JSON would store it."""
        names = {name for klass in cls.__mro__ for name in getattr(klass, "__annotations__", {})}
        values = {name: getattr(cls, name) for name in names if hasattr(cls, name)}
        return _as_json({name: value for name, value in values.items() if isinstance(value, (type(None), bool, int, float, str, list, tuple))})


class DiffusionBlocksConfig(BlockPartitionedConfig):
    """Block fields plus the continuous-noise partition (docs/method.md, 'VE diffusion'; EDM defaults).

    Args:
        sigma_min (`float`, defaults to 0.002), sigma_max (`float`, defaults to 80.0): noise range.
        sigma_data (`float`, defaults to 0.5): data standard deviation of EDM preconditioning.
        p_mean (`float`, defaults to -1.2), p_std (`float`, defaults to 1.2): log-normal p_noise.
        partition (`str`, defaults to `"equiprobable"`): `"equiprobable"`, `"uniform_linear"` or `"uniform_log"`.
        overlap (`float`, defaults to 0.05): block overlap γ for training, in [0, 1).

    Every number is checked at construction (finite, `0 < sigma_min < sigma_max`, `p_std > 0`,
    `sigma_data > 0`), so a bad value fails by name instead of giving infinite or NaN boundaries.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    partition: str = "equiprobable"
    overlap: float = 0.05

    def __post_init__(self, **kwargs):
        partition_from(self)  # NoisePartition validates the partition fields
        # EDMPreconditioning validates sigma_data.
        EDMPreconditioning(self.sigma_data)
        for name in ("sigma_min", "sigma_max", "sigma_data", "p_mean", "p_std", "overlap"):
            setattr(self, name, float(getattr(self, name)))
        super().__post_init__(**kwargs)

    @property
    def noise_partition(self) -> NoisePartition:
        """The partition of the σ range these blocks were (or will be) trained on."""
        return partition_from(self)

    @property
    def preconditioning(self) -> EDMPreconditioning:
        return EDMPreconditioning(self.sigma_data)

    def scheduler_kwargs(self) -> dict[str, Any]:
        """The arguments of a `DiffusionBlocksScheduler` that samples with exactly this partition."""
        return {**{name: getattr(self, name) for name in PARTITION_FIELDS}, "sigma_data": self.sigma_data}


@dataclass(frozen=True)
class TransformerSize:
    """Width and depth of a named model size (`XS` is this library's CPU-sized model); the MLP is 4× wide."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size

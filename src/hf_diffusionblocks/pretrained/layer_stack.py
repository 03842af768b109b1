"""The layer stack a conversion slices into blocks: one module list, or several run one after another.

Most diffusers transformers keep their layers in one `transformer_blocks` list. Flux keeps two, run in
order: its double-stream `transformer_blocks`, then its `single_transformer_blocks`. A conversion
numbers the concatenation `0 … L−1` (the lists in execution order) and gives block b increasing
indices of that numbering (a contiguous range by default, see `initial_layers.py`), which may hold
layers of both lists. `LayerStack` maps between that global
numbering and the source's tensor names (`<list>.<local index>.…`), and splits a block's layers back
into the lists the source forward runs.

In `diffusion_blocks.json` the stack is the `layer_list` entry: the list's name when there is one
(the format of every single-list conversion), or `[[name, count], …]` when there are several.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LayerStack:
    """Module lists run one after another, as `(name, number of layers)` in execution order."""

    lists: tuple[tuple[str, int], ...]

    def __post_init__(self):
        if not self.lists:
            raise ValueError("a layer stack needs at least one module list.")
        names = [name for name, _ in self.lists]
        if len(set(names)) != len(names) or any(not isinstance(name, str) or not _IDENTIFIER.match(name) for name in names):
            raise ValueError(f"layer lists must be distinct module names (letters, digits, '_'), got {names}.")
        if any(not isinstance(count, int) or isinstance(count, bool) or count < 0 for _, count in self.lists):
            raise ValueError(f"layer counts must be integers >= 0, got {list(self.lists)}.")

    @classmethod
    def from_manifest(cls, value: Any, num_layers: int) -> "LayerStack":
        """The stack of a manifest's `layer_list` entry (a name, or `[[name, count], …]`) of `num_layers` layers."""
        if isinstance(value, str):
            return cls(((value, num_layers),))
        if not isinstance(value, list) or not all(isinstance(entry, (list, tuple)) and len(entry) == 2 for entry in value):
            raise ValueError(f"layer_list must be a module list name or [[name, count], ...], got {value!r}.")
        stack = cls(tuple((entry[0], entry[1]) for entry in value))
        if stack.num_layers != num_layers:
            raise ValueError(f"layer_list {value!r} holds {stack.num_layers} layers, but the blocks hold {num_layers}.")
        return stack

    def to_manifest(self) -> str | list[list[Any]]:
        """The `layer_list` entry: the name of a single list, `[[name, count], …]` for several."""
        if len(self.lists) == 1:
            return self.lists[0][0]
        return [[name, count] for name, count in self.lists]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.lists)

    @property
    def num_layers(self) -> int:
        return sum(count for _, count in self.lists)

    def describe(self) -> str:
        """`transformer_blocks`, or `transformer_blocks (19) + single_transformer_blocks (38)`."""
        if len(self.lists) == 1:
            return self.lists[0][0]
        return " + ".join(f"{name} ({count})" for name, count in self.lists)

    def locate(self, index: int) -> tuple[str, int]:
        """(list name, index in that list) of global layer `index`."""
        offset = 0
        for position, (name, count) in enumerate(self.lists):
            # the last list takes every index beyond the others (a single-list stack is not bounded here)
            if index - offset < count or position == len(self.lists) - 1:
                return name, index - offset
            offset += count
        raise AssertionError("unreachable")

    def source_name(self, index: int, rest: str) -> str:
        """The source tensor name of `rest` in global layer `index`: `<list>.<local>.<rest>`."""
        name, local = self.locate(index)
        return f"{name}.{local}.{rest}"

    def split_source_name(self, tensor_name: str) -> tuple[int, str] | None:
        """(global layer index, rest) of a source tensor named `<list>.<local>.<rest>`, else None."""
        offset = 0
        for name, count in self.lists:
            prefix = name + "."
            if tensor_name.startswith(prefix):
                local, _, rest = tensor_name[len(prefix):].partition(".")
                if not local.isdigit():
                    return None
                if int(local) >= count:
                    raise ValueError(f"tensor {tensor_name!r} lies beyond the {count} layers of {name!r}.")
                return offset + int(local), rest
            offset += count
        return None

    def index_of(self, tensor_name: str) -> int | None:
        """The global layer index of a source tensor, or None for a tensor outside the stack."""
        located = self.split_source_name(tensor_name)
        return None if located is None else located[0]

    def split_block(self, indices: Sequence[int], layers: Sequence[Any]) -> dict[str, list[Any]]:
        """The layers of a block, started from the global (increasing) stack `indices`, sorted into the
        lists they belong to (every list named, empty for the lists the block does not reach), in execution order."""
        if len(indices) != len(layers):
            raise ValueError(f"a block of {len(layers)} layers needs as many stack indices, got {list(indices)}.")
        parts: dict[str, list[Any]] = {name: [] for name in self.names}
        for index, layer in zip(indices, layers):
            parts[self.locate(index)[0]].append(layer)
        return parts

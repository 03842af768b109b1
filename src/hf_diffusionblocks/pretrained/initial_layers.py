"""Which source layers each block of a conversion starts from (`convert --init`).

A block is stored and trained on its own, so block b may start from any `n_b` layers of the source's
stack of L layers (n_b = `layers_per_block[b]`), kept in source order:

- `contiguous` (the default): block b starts from the b-th slice, layers `n_0 + … + n_{b-1}` onwards.
  Together the blocks hold every source layer once, but no block alone is a working denoiser: each runs
  only a part of the network the source ran at every timestep.
- `strided`: every block starts from `n_b` layers spread evenly over the whole depth, the first and the
  last kept: layer k (k = 0 … n_b − 1) is `round(k · (L − 1) / (n_b − 1))`, rounding halves up (layer 0
  when n_b = 1). Each block starts as a shallower copy of the whole network. With L = 12 and B = 3 every
  block starts from layers 0, 4, 7, 11; with B = 1 the block is the whole source (n_b = L gives 0 … L−1).

Blocks that start from the same source layer each hold their own copy of it.
"""

from __future__ import annotations

from typing import Sequence

INITS = ("contiguous", "strided")


def strided_layers(num_layers: int, count: int) -> list[int]:
    """`count` of `num_layers` stack indices spread evenly, first and last kept (see the module docstring)."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= num_layers:
        raise ValueError(f"count must be an integer in [1, num_layers={num_layers}], got {count!r}.")
    if count == 1:
        return [0]
    # round(k (L-1) / (n-1)) with halves rounded up, in integers: floor((2k(L-1) + (n-1)) / (2(n-1)))
    return [(2 * k * (num_layers - 1) + count - 1) // (2 * (count - 1)) for k in range(count)]


def contiguous_layers(layers_per_block: Sequence[int]) -> list[list[int]]:
    """Block b's slice of the stack for each block."""
    starts = [sum(layers_per_block[:b]) for b in range(len(layers_per_block))]
    return [list(range(start, start + count)) for start, count in zip(starts, layers_per_block)]


def initial_source_layers(init: str, num_layers: int, layers_per_block: Sequence[int]) -> list[list[int]]:
    """The source stack indices each block starts from, under `init` (one of `INITS`)."""
    if init == "contiguous":
        return contiguous_layers(layers_per_block)
    if init == "strided":
        return [strided_layers(num_layers, count) for count in layers_per_block]
    raise ValueError(f"init must be one of {list(INITS)}, got {init!r}.")

"""Saving a batch of images in [-1, 1] as one PNG grid, with tiny images enlarged to stay visible."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_image_grid_array(
    images: torch.Tensor, nrow: int = 8, min_tile_size: int = 64, padding: int = 2
) -> np.ndarray:
    """Tiles images into one uint8 array, `nrow` images per row, on a white background.

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`): values in [-1, 1] (clipped); C is 1 or 3.
        nrow (`int`, defaults to 8): images per row of the grid.
        min_tile_size (`int`, defaults to 64): each image is enlarged by the smallest integer
            factor (nearest neighbour) that makes its longer side at least this many pixels.
        padding (`int`, defaults to 2): white pixels between tiles and around the grid.

    Returns:
        `np.ndarray` of shape `(rows · (h + padding) + padding, cols · (w + padding) + padding, C)`,
        with `h, w` the enlarged tile size, `cols = min(nrow, N)` and `rows = ceil(N / nrow)`.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"`images` must be non-empty (N, C, H, W), C in (1, 3); got {tuple(images.shape)}.")
    if nrow < 1 or padding < 0 or min_tile_size < 1:
        raise ValueError(
            f"`nrow` and `min_tile_size` must be >= 1 and `padding` >= 0; "
            f"got nrow={nrow}, min_tile_size={min_tile_size}, padding={padding}."
        )
    num_images, num_channels, height, width = images.shape
    scale = max(1, math.ceil(min_tile_size / max(height, width)))
    tiles = images.detach().float().cpu().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    tiles = tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)   # (N, C, h, w)
    tiles = tiles.permute(0, 2, 3, 1).numpy()                                        # (N, h, w, C)
    tile_height, tile_width = height * scale, width * scale
    num_columns, num_rows = min(nrow, num_images), math.ceil(num_images / nrow)
    grid_height = num_rows * (tile_height + padding) + padding
    grid_width = num_columns * (tile_width + padding) + padding
    grid = np.full((grid_height, grid_width, num_channels), 255, dtype=np.uint8)  # white background
    for index, tile in enumerate(tiles):
        top = padding + (index // nrow) * (tile_height + padding)
        left = padding + (index % nrow) * (tile_width + padding)
        grid[top : top + tile_height, left : left + tile_width] = tile
    return grid


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int = 8,
    min_tile_size: int = 64,
    padding: int = 2,
) -> Image.Image:
    """Saves images in [-1, 1] as one PNG grid (see `make_image_grid_array` for the layout).

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`): values in [-1, 1]; C is 1 or 3.
        path (`str` or `os.PathLike`): where to write the PNG; parent folders are created.
        nrow (`int`, defaults to 8): images per row.
        min_tile_size (`int`, defaults to 64): tiny images (8×8 digits) are enlarged by an integer
            factor so that each tile is at least this many pixels wide.
        padding (`int`, defaults to 2): white pixels between tiles.

    Returns:
        `PIL.Image.Image`: the saved grid (mode `"L"` or `"RGB"`).
    """
    grid = make_image_grid_array(images, nrow=nrow, min_tile_size=min_tile_size, padding=padding)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")
    return picture

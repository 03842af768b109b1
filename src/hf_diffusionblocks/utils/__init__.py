"""Small helpers shared by examples and pipelines."""

from .image_grid import make_image_grid_array, save_image_grid

__all__ = ["make_image_grid_array", "save_image_grid"]

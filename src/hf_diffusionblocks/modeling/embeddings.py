"""Embeddings shared by the families: noise-level conditioning (sinusoidal features of c_noise + MLP), the
fixed 2-D sin/cos position embedding of image patches (DiT, ViT), and `unpatchify`, the way back from patch
tokens to an image (the library's DiT and the converted pretrained DiTs)."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sin/cos features of scalars (Transformer / DiT positional encoding).

    Args:
        values: `(...)` scalars.
        dim: number of features (even).
    Returns:
        `(..., dim)`: `[cos(values·f_k), sin(values·f_k)]` with f_k geometric from 1 to 1/max_period.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    )                                                                        # (half,)
    arguments = values.float()[..., None] * frequencies                     # (..., half)
    return torch.cat([torch.cos(arguments), torch.sin(arguments)], dim=-1)  # (..., dim)


def sincos_2d_position_embedding(hidden_size: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin/cos position embedding `(grid_size², hidden_size)` (MAE / DiT)."""
    quarter = hidden_size // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coordinates = torch.arange(grid_size, dtype=torch.float64)
    rows, columns = torch.meshgrid(coordinates, coordinates, indexing="ij")
    features = []
    for axis in (columns, rows):
        arguments = axis.flatten()[:, None] * frequencies[None]
        features += [torch.sin(arguments), torch.cos(arguments)]
    embedding = torch.cat(features, dim=1)
    return nn.functional.pad(embedding, (0, hidden_size - embedding.shape[1])).float()


class NoiseEmbedder(nn.Module):
    """Embeds the noise conditioning c_noise = ¼·ln σ into a `hidden_size` vector.

    c_noise spans about [−1.55, 1.1] on [0.002, 80]; it is multiplied by `input_scale` (1000) before
    the sinusoidal features so that their frequencies resolve that range, as DiT's timestep
    embedder does for integer timesteps.
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, input_scale: float = 1000.0):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.input_scale = input_scale
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """`(...)` c_noise → `(..., hidden_size)`."""
        features = sinusoidal_embedding(c_noise * self.input_scale, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """`(batch, grid², p²·C)` patch tokens of a square image → `(batch, C, grid·p, grid·p)`."""
    batch, tokens, _ = patches.shape
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise ValueError(f"patches must hold a square grid of tokens, got {tokens} tokens.")
    patches = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
    return patches.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, grid * patch_size, grid * patch_size)

"""The fixed target-embedding table of a discrete target (class labels, or tokens), shared by the
families whose target is a class: the ViT classifier (labels) and the recurrent-depth LM (tokens).

Row k is the clean target y of class k: `E = σ_data·√d·[I_K | 0]`, a scaled one-hot code of
`num_classes = K` rows in `d >= K` dimensions (docs/method.md, 'Discrete targets': non-trainable, made deterministically
from the config, so blocks trained apart agree on the target space).

Why this scale. EDM preconditioning (c_in, c_skip, c_out, λ; Karras et al. 2022, Table 1) assumes
targets with per-coordinate root-mean-square σ_data. Each row has squared norm σ_data²·d, i.e. a
per-coordinate RMS of exactly σ_data, so `c_in(σ)·z` has unit variance at every σ and
c_skip/c_out interpolate as designed. (The reference code's L2-normalised rows have an RMS of
1/√d, four times smaller than σ_data = 0.5 at d = 64: the network input is then under-scaled at
low σ and the target sits far below the noise floor the schedule was built for.)

Why one-hot. The noise is isotropic, so the denoising problem depends on the table only through
its Gram matrix: any orthogonal table with equal row norms is a rotation of this one, which the
first linear layer absorbs. Classes are equidistant, ‖E_i − E_j‖ = σ_data·√(2d); z = E_y + σε
identifies its class once σ is well below half of that (≈1.1 for d = 10, σ_data = 0.5), so the
label information enters the state in the high-noise blocks. A padding `d > K` only widens the
separation (more zero coordinates of pure noise).

The denoised estimate of a classifier readout is the posterior mean `D̂ = softmax(logits)·E`
(docs/method.md, 'Discrete targets'), which is the exact MMSE denoiser when the logits are the posterior.
"""

from __future__ import annotations

import torch


def target_embedding_table(num_classes: int, embedding_dim: int, sigma_data: float) -> torch.Tensor:
    """`(num_classes, embedding_dim)` float32 table `σ_data·√d·[I | 0]`, per-coordinate RMS σ_data per row.

    Args:
        num_classes (`int`): number of rows K (labels or vocabulary size).
        embedding_dim (`int`): dimension d of the target space, `>= num_classes`.
        sigma_data (`float`): EDM data standard deviation (0.5 in the paper).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if embedding_dim < num_classes:
        raise ValueError(
            f"the target embedding dimension must be >= the number of classes ({num_classes}), got {embedding_dim}."
        )
    table = torch.zeros(num_classes, embedding_dim, dtype=torch.float32)
    table[:, :num_classes] = torch.eye(num_classes) * (sigma_data * embedding_dim**0.5)
    return table


def posterior_mean(logits: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """D̂ = softmax(logits)·E: `(..., K)` logits, `(K, d)` table → `(..., d)` denoised target."""
    return torch.softmax(logits.float(), dim=-1).to(table.dtype) @ table

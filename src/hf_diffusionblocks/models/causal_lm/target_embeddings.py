"""The fixed target-embedding table E of the causal LM: what the next token's noisy embedding is made of.

DiffusionBlocks denoises y = E[token] (docs/method.md, 'Discrete targets'): z = y + σ·ε, and a block's readout gives logits whose
softmax-weighted average D̂ = softmax(logits)·E is the denoised estimate the Euler step uses. E is not
trained: it is drawn once from the config's seed and shared by every block, so B blocks trained in B
processes agree on the target space without communicating.

Scale. Entries are i.i.d. N(0, σ_data²): the per-coordinate standard deviation of the targets is σ_data,
the data scale the EDM coefficients c_in, c_skip, c_out assume (c_in·z has unit variance at every σ). The
reference code's L2-normalised rows (per-coordinate std 1/√d) are σ_data·√d times too small for that.

Width d. With std σ_data fixed, d sets the noise level at which z identifies its token: the wider the
table, the higher that level. A wide table (d = 128) makes the token certain inside the lower blocks'
intervals, so those blocks would only copy z and block 0 would do all the prediction; the default d = 16
puts the transition from "unknown" to "identified" across blocks 0 and 1 (B = 4). `posterior_entropy`
measures it; the figures and the command are in docs/results/causal_lm.md.

Semantic tables. Instead of the seeded random table, E can be a table given once (`config.target_embedding_sha256`
set): `semantic_target_embeddings` projects the vocabulary readout of a trained causal LM (an end-to-end model,
say) onto its d leading principal directions, so tokens that the LM predicts in the same contexts lie close
together and the posterior mean of an uncertain prediction stays near the plausible tokens. Such a table is
not rebuilt from the config: every block file carries a copy, checked against the config's digest on load,
so blocks trained apart still agree on their target space without talking to each other.
"""

from __future__ import annotations

import hashlib
import math

import torch


def make_target_embeddings(vocab_size: int, dim: int, sigma_data: float, seed: int) -> torch.Tensor:
    """E `(vocab_size, dim)` float32, i.i.d. N(0, sigma_data²), drawn on the CPU from `torch.Generator(seed)`."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    table = torch.randn(vocab_size, dim, generator=generator, dtype=torch.float64, device="cpu")
    return (table * sigma_data).float()


def target_embedding_digest(table: torch.Tensor) -> str:
    """sha256 of a table's float32 values (row-major) and shape: what `config.target_embedding_sha256` records."""
    data = table.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(repr(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def semantic_target_embeddings(readout_weight: torch.Tensor, dim: int, sigma_data: float) -> torch.Tensor:
    """E `(vocab_size, dim)` float32 from a trained LM's readout `(vocab_size, hidden)`: the rows, centred, projected on
    their `dim` leading principal directions (SVD in float64) and scaled to a per-coordinate RMS of `sigma_data`,
    the scale of the random table. Each column's largest entry is made positive: the table depends on the
    readout's geometry alone, not on the signs an SVD happens to return."""
    if readout_weight.ndim != 2 or not 1 <= dim <= min(readout_weight.shape):
        raise ValueError(
            f"the readout must be a (vocab_size, hidden) matrix with hidden >= target_embedding_dim={dim}, "
            f"got shape {tuple(readout_weight.shape)}."
        )
    rows = readout_weight.detach().to("cpu", torch.float64)
    rows = rows - rows.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(rows, full_matrices=False)
    table = rows @ right[:dim].T                                                 # (vocab, dim)
    table = table * torch.sign(table.gather(0, table.abs().argmax(0, keepdim=True)))   # SVD's signs are arbitrary
    rms = table.pow(2).mean().sqrt()
    if not torch.isfinite(rms) or rms == 0:
        raise ValueError("the readout has no variance across the vocabulary (an untrained model?).")
    return (table * (sigma_data / rms)).float()


@torch.no_grad()
def posterior_entropy(
    target_embeddings: torch.Tensor, sigma: float, num_samples: int = 2000, seed: int = 0
) -> float:
    """Mean entropy of p(token | z = E[token] + σε) under a uniform prior, as a fraction of ln V.

    0 means z identifies its token, 1 that z carries no information about it. Used to choose
    `target_embedding_dim` (see the module docstring).
    """
    generator = torch.Generator().manual_seed(seed)
    vocab_size = target_embeddings.shape[0]
    tokens = torch.randint(0, vocab_size, (num_samples,), generator=generator)
    noisy = target_embeddings[tokens] + sigma * torch.randn(num_samples, target_embeddings.shape[1], generator=generator)
    log_posterior = (-torch.cdist(noisy, target_embeddings).pow(2) / (2 * sigma**2)).log_softmax(-1)  # (samples, V)
    entropy = -(log_posterior.exp() * log_posterior).sum(-1).mean()
    return float(entropy) / math.log(vocab_size)

"""Attention masks of the causal LM (boolean, True = may attend), and its rotary position embedding.

Training concatenates a noisy stream and a clean stream, `[z_0 … z_{n-1}, x_0 … x_{n-1}]` (Block
Diffusion, Arriola et al. 2025, with block size 1): noisy position i attends to the clean tokens < i and
to itself; the clean stream is plainly causal and never sees a noisy token, so its keys and values do
not depend on σ and can be cached once per token at generation time.
"""

from __future__ import annotations

import torch


def block_diffusion_attention_mask(sequence_length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The `(2n, 2n)` mask of the stream `[noisy_0..noisy_{n-1}, clean_0..clean_{n-1}]`, n = `sequence_length`.

    Row q attends to column k when
    - q = noisy i, k = clean j: j < i;   - q = noisy i, k = noisy j: j = i;
    - q = clean i, k = clean j: j ≤ i;   - q = clean i, k = noisy j: never.
    """
    index = torch.arange(sequence_length, device=device)
    earlier = index[None, :] < index[:, None]                     # (n, n): j < i
    diagonal = index[None, :] == index[:, None]                   # (n, n): j = i
    noisy_rows = torch.cat([diagonal, earlier], dim=1)            # (n, 2n)
    clean_rows = torch.cat([torch.zeros_like(diagonal), earlier | diagonal], dim=1)
    return torch.cat([noisy_rows, clean_rows], dim=0)             # (2n, 2n)


def cached_clean_attention_mask(key_padding: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Clean queries (the last `num_queries` of the keys) over all clean keys: causal, no padding keys.

    Args:
        key_padding (`torch.BoolTensor` of shape `(batch, num_keys)`): True for real tokens (the 2-D
            `attention_mask` of `generate`), cached tokens included.
    Returns:
        `(batch, 1, num_queries, num_keys)`. A query always sees itself, so a left-padding query is not
        an all-masked row (which would make SDPA return NaN); real tokens never attend to padding.
    """
    num_keys = key_padding.shape[1]
    query_index = torch.arange(num_keys - num_queries, num_keys, device=key_padding.device)[:, None]
    key_index = torch.arange(num_keys, device=key_padding.device)[None, :]
    causal = key_index <= query_index                                             # (queries, keys)
    allowed = causal[None] & key_padding[:, None, :]                              # (batch, queries, keys)
    return (allowed | (key_index == query_index)[None])[:, None]


def noisy_query_attention_mask(key_padding: torch.Tensor, context_lengths: torch.Tensor) -> torch.Tensor:
    """Noisy queries over `[clean keys, the noisy queries themselves]` (nothing is cached for them).

    Args:
        key_padding (`torch.BoolTensor` of shape `(batch, num_keys)`): True for real clean tokens.
        context_lengths (`torch.LongTensor` of shape `(num_queries,)`): noisy query q sees the clean keys
            with index < `context_lengths[q]` (the tokens before the one it predicts).
    Returns:
        `(batch, 1, num_queries, num_keys + num_queries)`: clean context without padding, then itself only.
    """
    num_keys, num_queries = key_padding.shape[1], context_lengths.shape[0]
    key_index = torch.arange(num_keys, device=key_padding.device)
    context = (key_index[None, :] < context_lengths[:, None])[None] & key_padding[:, None, :]  # (batch, q, keys)
    itself = torch.eye(num_queries, dtype=torch.bool, device=key_padding.device)
    itself = itself.expand(key_padding.shape[0], num_queries, num_queries)
    return torch.cat([context, itself], dim=-1)[:, None]


def fused_step_attention_mask(key_padding: torch.Tensor, num_new_tokens: int, context_lengths: torch.Tensor) -> torch.Tensor:
    """New clean tokens and noisy queries in one call: the two masks above, side by side.

    The queries are `[the last num_new_tokens clean tokens, the noisy queries]`; the keys are `[every clean
    token (cached + new), the noisy queries]`. A clean row is `cached_clean_attention_mask` (it never sees a
    noisy key, so what it writes to the cache is that of a clean-only pass); a noisy row is
    `noisy_query_attention_mask`. This is the training mask (`block_diffusion_attention_mask`) restricted
    to the rows being computed, with the earlier clean rows already in the cache.

    Args:
        key_padding (`torch.BoolTensor` of shape `(batch, num_keys)`): True for real clean tokens, new ones included.
        num_new_tokens (`int`): how many of the last clean keys are queries of this call.
        context_lengths (`torch.LongTensor` of shape `(num_queries,)`): see `noisy_query_attention_mask`.
    Returns:
        `(batch, 1, num_new_tokens + num_queries, num_keys + num_queries)`.
    """
    clean_rows = cached_clean_attention_mask(key_padding, num_new_tokens)                     # (batch, 1, n, keys)
    clean_rows = torch.cat([clean_rows, clean_rows.new_zeros(*clean_rows.shape[:3], context_lengths.shape[0])], dim=-1)
    return torch.cat([clean_rows, noisy_query_attention_mask(key_padding, context_lengths)], dim=2)


def fused_position_ids(new_position_ids: torch.Tensor, query_position_ids: torch.Tensor) -> torch.Tensor:
    """Positions of a call over `[new clean tokens, noisy queries]`: `(batch | 1, n)` and `(batch, k)` → `(batch, n + k)`."""
    return torch.cat([new_position_ids.expand(query_position_ids.shape[0], -1), query_position_ids], dim=1)

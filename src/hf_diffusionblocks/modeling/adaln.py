"""AdaLN-Zero conditioned transformer layer (DiT, Peebles & Xie 2023), shared by every family.

The conditioning vector (noise level, and for DiT the class label) sets the shift, scale and gate
of both sub-layers. The modulation is zero-initialised, so every layer starts as the identity:
the residual stream is exactly the Euler-step reading of DiffusionBlocks.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

# `(key, value)` of the current tokens → the keys and values to attend over (e.g. a KV cache's update).
KeyValueHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def modulate(hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x·(1 + scale) + shift, with shift/scale `(batch, 1 | seq, hidden)`."""
    return hidden_states * (1 + scale) + shift


def zero_init(module: nn.Linear) -> nn.Linear:
    """Mark a linear layer to be zero-initialised by the model's `_init_weights`."""
    module._zero_init = True
    return module


class RMSNorm(nn.Module):
    """Root-mean-square norm without a learned scale (the scale comes from AdaLN)."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.float().pow(2).mean(-1, keepdim=True)
        return (hidden_states.float() * torch.rsqrt(variance + self.eps)).to(hidden_states.dtype)


def build_norm(norm_type: str, hidden_size: int, eps: float) -> nn.Module:
    if norm_type == "layer_norm":
        return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=eps)
    if norm_type == "rms_norm":
        return RMSNorm(eps)
    raise ValueError(f"norm_type must be 'layer_norm' or 'rms_norm', got {norm_type!r}.")


def apply_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding on `(batch, heads, seq, head_dim)` with cos/sin `(batch | 1, seq, head_dim)`."""
    first, second = states.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return states * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding (RoFormer; Llama's half-split layout) for `adaln.apply_rotary`.

    Args:
        position_ids (`torch.LongTensor` of shape `(batch | 1, seq)`).
    Returns:
        cos, sin of shape `(batch | 1, seq, head_dim)`.
    """
    inverse_frequency = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim
    )                                                                             # (head_dim / 2,)
    angles = position_ids.float()[..., None] * inverse_frequency                  # (batch, seq, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)                                  # (batch, seq, head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, hidden_size: int, num_attention_heads: int, bias: bool = True):
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={hidden_size} must be divisible by num_attention_heads={num_attention_heads}."
            )
        self.num_attention_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.proj = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
        key_value_hook: KeyValueHook | None = None,
    ) -> torch.Tensor:
        """`key_value_hook(key, value)`, given the rotated `(batch, heads, seq, head_dim)` keys and values of
        these tokens, returns those to attend over (a KV cache appends them to the past; a query that must
        not be cached prepends the past without storing). `attention_mask` then spans the returned keys."""
        batch, seq_len, hidden = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, seq_len, 3, self.num_attention_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)                         # 3 × (batch, heads, seq, head_dim)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        if key_value_hook is not None:
            key, value = key_value_hook(key, value)                             # (batch, heads, keys, head_dim)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, is_causal=is_causal and attention_mask is None
        )                                                                       # (batch, heads, seq, head_dim)
        return self.proj(attended.transpose(1, 2).reshape(batch, seq_len, hidden))


class FeedForward(nn.Module):
    """GELU (tanh) MLP as in DiT/ViT, or SwiGLU as in Llama."""

    def __init__(self, hidden_size: int, intermediate_size: int, mlp_type: Literal["gelu", "swiglu"] = "gelu"):
        super().__init__()
        if mlp_type not in ("gelu", "swiglu"):
            raise ValueError(f"mlp_type must be 'gelu' or 'swiglu', got {mlp_type!r}.")
        self.mlp_type = mlp_type
        self.up = nn.Linear(hidden_size, intermediate_size * (2 if mlp_type == "swiglu" else 1))
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.mlp_type == "swiglu":
            gate, up = self.up(hidden_states).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(hidden_states), approximate="tanh"))


class AdaLNZeroTransformerLayer(GradientCheckpointingLayer):
    """Pre-norm attention + MLP layer with AdaLN-Zero modulation from a conditioning vector.

    Args:
        hidden_size, num_attention_heads, intermediate_size: transformer sizes.
        norm_type: `"layer_norm"` (DiT/ViT) or `"rms_norm"` (Llama-style).
        mlp_type: `"gelu"` or `"swiglu"`.
        norm_eps: epsilon of both norms.
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        intermediate_size: int,
        norm_type: Literal["layer_norm", "rms_norm"] = "layer_norm",
        mlp_type: Literal["gelu", "swiglu"] = "gelu",
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.attention_norm = build_norm(norm_type, hidden_size, norm_eps)
        self.attention = SelfAttention(hidden_size, num_attention_heads)
        self.mlp_norm = build_norm(norm_type, hidden_size, norm_eps)
        self.mlp = FeedForward(hidden_size, intermediate_size, mlp_type)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden_size, 6 * hidden_size)))

    def forward(
        self,
        hidden_states: torch.Tensor,
        conditioning: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
        key_value_hook: KeyValueHook | None = None,
    ) -> torch.Tensor:
        """`(batch, seq, hidden)` states, `(batch, hidden)` or per-token `(batch, seq, hidden)` conditioning.

        `key_value_hook` (*optional*): see `SelfAttention.forward` (the causal LM's KV cache).
        """
        if conditioning.ndim == 2:
            conditioning = conditioning.unsqueeze(1)                               # (batch, 1, hidden)
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.modulation(conditioning).chunk(6, dim=-1)
        attended = self.attention(
            modulate(self.attention_norm(hidden_states), shift_attn, scale_attn),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            is_causal=is_causal,
            key_value_hook=key_value_hook,
        )
        hidden_states = hidden_states + gate_attn * attended
        mlp_output = self.mlp(modulate(self.mlp_norm(hidden_states), shift_mlp, scale_mlp))
        return hidden_states + gate_mlp * mlp_output


class AdaLNZeroFinalLayer(nn.Module):
    """Final norm modulated by the conditioning, then a zero-initialised linear readout."""

    def __init__(self, hidden_size: int, out_features: int, norm_type: str = "layer_norm", norm_eps: float = 1e-6):
        super().__init__()
        self.norm = build_norm(norm_type, hidden_size, norm_eps)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden_size, 2 * hidden_size)))
        self.linear = zero_init(nn.Linear(hidden_size, out_features))

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        if conditioning.ndim == 2:
            conditioning = conditioning.unsqueeze(1)
        shift, scale = self.modulation(conditioning).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(hidden_states), shift, scale))

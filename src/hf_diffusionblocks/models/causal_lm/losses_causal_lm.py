"""The causal LM's per-block objective (DiffusionBlocks Eq. 6 with a cross-entropy readout) and the
end-to-end baseline's next-token cross-entropy.

σ is drawn per token, not per sequence: noisy positions never attend to each other (block-diffusion mask,
block size 1), so the n positions of a sequence are n independent denoising problems, and a σ for each
gives n draws from the block's σ interval per sequence instead of one, for the same compute: a
lower-variance estimate of the block's loss over its whole interval. At generation all queries of a step
share one σ, which the model never needs to know.

The cross-entropy is not weighted by λ(σ): λ makes the L2 target of F unit-variance, but a CE on logits is
already on a common scale across σ, and λ (≈4 at σ = 80, ≈2.5e5 at σ = 0.002) would hand the whole
gradient to the low-σ tokens, which z alone already identifies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .configuration_causal_lm import DiffusionBlocksCausalLMConfig


class CausalLMDenoisingLoss:
    """Block b's loss: E_{σ ~ p_noise|block b, ε} [ mean_i CE(logits_b(x_<i, E[x_i] + σ_i ε_i, σ_i), x_i) ], in nats per token,
    plus `config.clean_loss_weight` × the clean stream's next-token loss mean_i CE(clean_logits_b(x_≤i), x_{i+1})
    when that weight is positive (computed in the same pass; nothing crosses blocks).

    For `objective="next_token"` (the end-to-end baseline): mean_i CE(logits(x_≤i), x_{i+1}).

    Args:
        config (`DiffusionBlocksCausalLMConfig`): the model's config (partition and objective).
    """

    def __init__(self, config: DiffusionBlocksCausalLMConfig):
        self.noise_partition = config.noise_partition
        self.objective = config.objective
        self.clean_loss_weight = float(config.clean_loss_weight)

    def __call__(
        self, model, block_index: int, input_ids: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """`input_ids` `(batch, n)`; all randomness from `generator` (drawn on the CPU, so devices agree)."""
        if self.objective == "next_token":
            logits = model.forward_block(block_index, input_ids).logits                # (batch, n, vocab)
            return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())
        batch, seq_len = input_ids.shape
        sigma = self.noise_partition.sample_training_sigmas(block_index, batch * seq_len, generator)
        sigma = sigma.view(batch, seq_len).to(input_ids.device)                          # per token
        target = model.target_embeddings[input_ids]                                      # (batch, n, d)
        noise = torch.randn(target.shape, generator=generator).to(target.device, target.dtype)
        noisy = target + sigma[..., None].to(target.dtype) * noise                       # z = y + σ·ε
        output = model.forward_block(block_index, input_ids, noisy, sigma, output_clean_logits=self.clean_loss_weight > 0)
        loss = F.cross_entropy(output.logits.flatten(0, 1).float(), input_ids.flatten())
        if self.clean_loss_weight > 0:
            clean_logits = output.clean_logits[:, :-1]                                   # position i predicts x_{i+1}
            loss = loss + self.clean_loss_weight * F.cross_entropy(clean_logits.flatten(0, 1).float(), input_ids[:, 1:].flatten())
        return loss

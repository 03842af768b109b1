"""DiffusionBlocksTextPipeline: text from a masked diffusion LM by ancestral unmasking, one block per step."""
# No `from __future__ import annotations`: diffusers type-checks a pipeline's components against the classes in
# its `__init__` signature, and older releases cannot read string annotations.

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

from ..argument_checks import check_integer, check_num_inference_steps, check_number
from ..models.masked_lm import DiffusionBlocksForMaskedLM
from ..schedulers import MaskedDiffusionBlocksScheduler
from ..tokenization_char import CharacterTokenizer
from .pipeline_utils import DiffusionBlocksPipelineBase


@dataclass
class TextPipelineOutput(BaseOutput):
    """
    Args:
        texts (`list[str]`): the generated texts, prompts included, special tokens removed.
        token_ids (`torch.LongTensor` of shape `(batch, sequence_length)`): the generated ids.
    """

    texts: list[str]
    token_ids: torch.Tensor


def check_components_match(transformer: DiffusionBlocksForMaskedLM, scheduler, tokenizer) -> None:
    """Refuse a scheduler or tokenizer that does not belong to the transformer's config."""
    config = transformer.config
    for field, expected in config.scheduler_kwargs().items():
        if scheduler.config[field] != expected:
            raise ValueError(
                f"scheduler.{field}={scheduler.config[field]!r} differs from the model's {expected!r}: the blocks were "
                f"trained on another partition. Use transformer.build_scheduler()."
            )
    if len(tokenizer) != config.vocab_size or tokenizer.mask_token_id != config.mask_token_id:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens and mask_token_id={tokenizer.mask_token_id}, but the model has "
            f"vocab_size={config.vocab_size} and mask_token_id={config.mask_token_id}: not the model's tokenizer."
        )


class DiffusionBlocksTextPipeline(DiffusionBlocksPipelineBase):
    """Sample text from a DiffusionBlocks masked diffusion LM.

    Sampling starts from an all-mask sequence at t = 1 (prompt tokens excepted) and unmasks towards
    t = 0 with `MaskedDiffusionBlocksScheduler.step` (ancestral; revealed tokens stay). Every step runs
    only the block that owns its t, so a step costs the layers of one block (L/B) instead of all L.

    Args:
        transformer ([`DiffusionBlocksForMaskedLM`]): the blocks (all must be loaded to sample).
        scheduler ([`MaskedDiffusionBlocksScheduler`]): with the transformer's partition (`transformer.build_scheduler()`).
        tokenizer ([`CharacterTokenizer`]): the tokenizer the model was trained with.
    """

    model_cpu_offload_seq = "transformer"
    component_classes = (DiffusionBlocksForMaskedLM, MaskedDiffusionBlocksScheduler, CharacterTokenizer)

    def __init__(
        self,
        transformer: DiffusionBlocksForMaskedLM,
        scheduler: MaskedDiffusionBlocksScheduler,
        tokenizer: CharacterTokenizer,
    ):
        super().__init__()
        check_components_match(transformer, scheduler, tokenizer)
        self.register_modules(transformer=transformer, scheduler=scheduler, tokenizer=tokenizer)

    def _initial_ids(self, prompt: str | list[str] | None, num_samples: int, sequence_length: int) -> torch.Tensor:
        """`(batch, sequence_length)`: each prompt's ids at the start, the mask token everywhere else."""
        mask_token_id = self.transformer.config.mask_token_id
        prompts = [prompt] if isinstance(prompt, str) else ([""] if prompt is None else prompt)
        if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(text, str) for text in prompts):
            raise ValueError(f"prompt must be a string, a non-empty list of strings, or None, got {prompt!r}.")
        ids = torch.full((len(prompts) * num_samples, sequence_length), mask_token_id, dtype=torch.long)
        for row, text in enumerate(prompts):
            prompt_ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(prompt_ids) >= sequence_length:
                raise ValueError(
                    f"prompt {row} has {len(prompt_ids)} tokens; it must be shorter than sequence_length={sequence_length}."
                )
            ids[row * num_samples : (row + 1) * num_samples, : len(prompt_ids)] = torch.tensor(prompt_ids, dtype=torch.long)
        return ids.to(self._execution_device)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_texts_per_prompt: int = 1,
        sequence_length: int | None = None,
        num_inference_steps: int = 128,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        num_samples: int | None = None,
    ) -> TextPipelineOutput | tuple:
        """Generate text.

        Args:
            prompt (`str` or `list[str]`, *optional*): prefix(es) to continue; None samples unconditionally.
                The string `[MASK]` inside a prompt is a position to fill in (infilling).
            num_texts_per_prompt (`int`, defaults to 1): samples per prompt (named as diffusers' `num_images_per_prompt`);
                without a prompt, the number of samples.
            sequence_length (`int`, *optional*): tokens per sample, prompt included; defaults to the model's
                `max_position_embeddings`.
            num_inference_steps (`int`, defaults to 128): unmasking steps from t = 1 to 0, equally spaced in α,
                at least `num_blocks`; a multiple of `num_blocks` gives every block the same number of steps.
            temperature (`float`, defaults to 1.0): softmax temperature (> 0) of the revealed tokens.
            generator (`torch.Generator`, *optional*): on the pipeline's device, for reproducible samples.
            num_samples (`int`, *optional*): another name of `num_texts_per_prompt`.
        Returns:
            `TextPipelineOutput` with `texts` (`list[str]`, one per sample, prompt first) and `token_ids`.
            Special tokens other than the mask (`[UNK]`) are never sampled, so a prompt-free sample decodes to
            exactly `sequence_length` characters (character vocabularies).
        """
        config = self.transformer.config
        sequence_length = config.max_position_embeddings if sequence_length is None else sequence_length
        sequence_length = check_integer(sequence_length, "sequence_length", minimum=1, maximum=config.max_position_embeddings)
        if num_samples is not None and num_texts_per_prompt != 1:
            raise ValueError(f"got num_samples={num_samples!r} and num_texts_per_prompt={num_texts_per_prompt!r}; give one of them.")
        if num_samples is None:
            num_samples = check_integer(num_texts_per_prompt, "num_texts_per_prompt", minimum=1)
        else:
            num_samples = check_integer(num_samples, "num_samples", minimum=1)
        num_inference_steps = check_num_inference_steps(num_inference_steps, config.num_blocks)
        temperature = check_number(temperature, "temperature", minimum=0, minimum_exclusive=True)
        sample = self._initial_ids(prompt, num_samples, sequence_length)

        # special tokens other than the mask (e.g. [UNK]) are never revealed; the scheduler excludes the mask
        never_revealed = [i for i in self.tokenizer.all_special_ids if i != config.mask_token_id]
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        for t, block_index in self.progress_bar(list(zip(self.scheduler.timesteps, self.scheduler.block_indices.tolist()))):
            logits = self.transformer.forward_block(block_index, sample, t).logits    # (batch, seq, vocab)
            if never_revealed:
                masked = (sample == config.mask_token_id).unsqueeze(-1)                 # (batch, seq, 1)
                suppressed = torch.zeros(config.vocab_size, dtype=torch.bool, device=logits.device)
                suppressed[never_revealed] = True
                logits = logits.masked_fill(masked & suppressed, -float("inf"))
            sample = self.scheduler.step(
                logits, t, sample, config.mask_token_id, generator=generator, temperature=temperature
            ).prev_sample

        texts = self.tokenizer.batch_decode(sample.cpu().tolist(), skip_special_tokens=True)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (texts, sample)
        return TextPipelineOutput(texts=texts, token_ids=sample)

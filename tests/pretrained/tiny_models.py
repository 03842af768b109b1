"""Tiny random diffusers transformers and pipelines, built locally (no downloads), saved as diffusers folders."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from conftest import randomize_

NUM_LAYERS = 4
TEXT_TOKENS, CAPTION_CHANNELS, JOINT_DIM, POOLED_DIM = 5, 32, 32, 64
FLUX_CHANNELS, FLUX_TOKENS = 16, 16  # 8×8 latents of 4 channels, packed into 4×4 tokens of 2×2×4


def tiny_vae(shift_factor: float | None = None) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(shift_factor=shift_factor,
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=8,
    )


def tiny_transformer(kind: str, num_layers: int = NUM_LAYERS, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "dit":
        model = DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_layers,
            sample_size=8, patch_size=2, num_embeds_ada_norm=1000,  # DiTPipeline's null label is 1000
        )
    elif kind == "pixart":
        model = PixArtTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_layers,
            sample_size=8, patch_size=2, cross_attention_dim=16, caption_channels=CAPTION_CHANNELS,
            use_additional_conditions=False,
        )
    elif kind == "sd3":
        model = SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=4, num_layers=num_layers, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=JOINT_DIM, caption_projection_dim=16,
            pooled_projection_dim=POOLED_DIM, out_channels=4, pos_embed_max_size=8,
        )
    elif kind == "flux":  # L = num_layers double-stream + as many single-stream layers
        model = tiny_flux(num_layers - num_layers // 2, num_layers // 2)
    else:
        raise ValueError(kind)
    return randomize_(model, seed=seed, std=0.2).eval()


def tiny_flux(num_double: int, num_single: int) -> FluxTransformer2DModel:
    """A guidance-distilled Flux (FLUX.1-dev's layout) on 4-channel latents packed 2×2 (16 channels)."""
    return FluxTransformer2DModel(
        patch_size=1, in_channels=FLUX_CHANNELS, num_layers=num_double, num_single_layers=num_single, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=JOINT_DIM, pooled_projection_dim=POOLED_DIM, guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )


def tiny_pipeline(kind: str, transformer=None, pixart_pipeline: type = PixArtAlphaPipeline):
    transformer = transformer if transformer is not None else tiny_transformer(kind)
    if kind == "dit":
        return DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=DDIMScheduler(), id2label={i: str(i) for i in range(10)})
    if kind == "pixart":
        return pixart_pipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=transformer,
                                   scheduler=DPMSolverMultistepScheduler())
    if kind == "flux":
        return FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                            vae=tiny_vae(shift_factor=0.0), text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(shift_factor=0.0),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )


def save_pipeline_folder(kind: str, path: Path, transformer=None) -> Path:
    """A pipeline folder: model_index.json, scheduler/, vae/, transformer/ (safetensors)."""
    pipeline = tiny_pipeline(kind, transformer)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def random_inputs(kind: str, batch: int, timesteps, seed: int = 1) -> dict:
    """Forward arguments of the source class for `batch` samples at `timesteps`."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "flux":  # flow time in [0, 1], packed latents, position ids shared by the batch
        return {
            "hidden_states": torch.randn(batch, FLUX_TOKENS, FLUX_CHANNELS, generator=generator),
            "timestep": torch.as_tensor(timesteps), "guidance": torch.full((batch,), 3.5),
            "encoder_hidden_states": torch.randn(batch, TEXT_TOKENS, JOINT_DIM, generator=generator),
            "pooled_projections": torch.randn(batch, POOLED_DIM, generator=generator),
            "img_ids": torch.stack(torch.meshgrid(torch.zeros(4), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
            .reshape(-1, 3)[:FLUX_TOKENS],
            "txt_ids": torch.zeros(TEXT_TOKENS, 3),
        }
    inputs = {"hidden_states": torch.randn(batch, 4, 8, 8, generator=generator), "timestep": torch.as_tensor(timesteps)}
    if kind == "dit":
        inputs["class_labels"] = torch.randint(0, 10, (batch,), generator=generator)
    elif kind == "pixart":
        inputs["encoder_hidden_states"] = torch.randn(batch, TEXT_TOKENS, CAPTION_CHANNELS, generator=generator)
        inputs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
    else:
        inputs["encoder_hidden_states"] = torch.randn(batch, TEXT_TOKENS, JOINT_DIM, generator=generator)
        inputs["pooled_projections"] = torch.randn(batch, POOLED_DIM, generator=generator)
    return inputs


def pipeline_call_arguments(kind: str, batch: int = 2) -> dict:
    """Arguments that sample `batch` images with CFG, text pipelines driven by prompt embeddings."""
    generator = torch.Generator().manual_seed(3)
    if kind == "dit":
        return {"class_labels": list(range(batch)), "guidance_scale": 3.0}
    if kind == "pixart":
        return {
            "prompt": None, "negative_prompt": None,
            "prompt_embeds": torch.randn(batch, TEXT_TOKENS, CAPTION_CHANNELS, generator=generator),
            "prompt_attention_mask": torch.ones(batch, TEXT_TOKENS, dtype=torch.long),
            "negative_prompt_embeds": torch.randn(batch, TEXT_TOKENS, CAPTION_CHANNELS, generator=generator),
            "negative_prompt_attention_mask": torch.ones(batch, TEXT_TOKENS, dtype=torch.long),
            "guidance_scale": 3.0, "height": 8, "width": 8, "use_resolution_binning": False, "num_images_per_prompt": 1,
        }
    if kind == "flux":  # true CFG (a negative prompt and true_cfg_scale > 1) on top of the guidance embedding
        return {
            "prompt": None, "prompt_embeds": torch.randn(batch, TEXT_TOKENS, JOINT_DIM, generator=generator),
            "pooled_prompt_embeds": torch.randn(batch, POOLED_DIM, generator=generator),
            "negative_prompt_embeds": torch.randn(batch, TEXT_TOKENS, JOINT_DIM, generator=generator),
            "negative_pooled_prompt_embeds": torch.randn(batch, POOLED_DIM, generator=generator),
            "true_cfg_scale": 2.0, "guidance_scale": 3.5, "height": 8, "width": 8,
        }
    return {
        "prompt": None, "prompt_embeds": torch.randn(batch, TEXT_TOKENS, JOINT_DIM, generator=generator),
        "pooled_prompt_embeds": torch.randn(batch, POOLED_DIM, generator=generator),
        "negative_prompt_embeds": torch.randn(batch, TEXT_TOKENS, JOINT_DIM, generator=generator),
        "negative_pooled_prompt_embeds": torch.randn(batch, POOLED_DIM, generator=generator),
        "guidance_scale": 3.0, "height": 8, "width": 8,
    }

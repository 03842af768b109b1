"""Bad input to every public entry point: one table of (entry point, bad arguments, error, names in the message).

Each row calls one entry point (pipelines' `__call__`, `generate`, the models' inference methods, the
schedulers' `set_timesteps` / `step` / `add_noise` / samplers, the configs, `from_pretrained`) with one
bad argument and checks that it raises a `ValueError` whose message names the argument and what it
accepts. Rows marked `guard=True` were already refused by name before this table was written and are
kept as regression guards; every other row failed on the code before it (no error, silently wrong
numbers, or an error from deep inside torch that names nothing).

A second table lists inputs that must *work*: float64 and NumPy inputs give the float32 / list result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from conftest import randomize_
from hf_diffusionblocks import (
    CharacterTokenizer,
    DiffusionBlocksCausalLMConfig,
    DiffusionBlocksDiTConfig,
    DiffusionBlocksDiTModel,
    DiffusionBlocksForCausalLM,
    DiffusionBlocksForImageClassification,
    DiffusionBlocksForMaskedLM,
    DiffusionBlocksImagePipeline,
    DiffusionBlocksMaskedLMConfig,
    DiffusionBlocksRecurrentConfig,
    DiffusionBlocksRecurrentForCausalLM,
    DiffusionBlocksScheduler,
    DiffusionBlocksTextPipeline,
    DiffusionBlocksViTConfig,
    MaskedDiffusionBlocksScheduler,
)
from hf_diffusionblocks.models.masked_lm.losses_masked_lm import stratified_times
from hf_diffusionblocks.models.recurrent import TruncatedBPTTLoss

NAN, INF = float("nan"), float("inf")
CHARACTERS = "\n abcdefghijklmnopqrstuvwxyz,."

# Tiny configs, as in tests/models: hidden 32, a few layers.
DIT = dict(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
           intermediate_size=64, num_labels=10, num_blocks=3)
MASKED_LM = dict(vocab_size=32, mask_token_id=31, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=24, num_blocks=3)
CAUSAL_LM = dict(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48,
                 max_position_embeddings=24, num_blocks=4, eos_token_id=1, pad_token_id=0)
VIT = dict(image_size=8, patch_size=2, num_channels=1, num_labels=10, hidden_size=32, num_hidden_layers=3,
           num_attention_heads=2, intermediate_size=64, num_blocks=3)
RECURRENT = dict(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_prelude_layers=1, num_coda_layers=1,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
FAMILIES = {
    "dit": (DiffusionBlocksDiTConfig, DIT),
    "masked_lm": (DiffusionBlocksMaskedLMConfig, MASKED_LM),
    "causal_lm": (DiffusionBlocksCausalLMConfig, CAUSAL_LM),
    "vit": (DiffusionBlocksViTConfig, VIT),
    "recurrent": (DiffusionBlocksRecurrentConfig, RECURRENT),
}
CONTINUOUS_FAMILIES = ("dit", "causal_lm", "vit", "recurrent")  # the DiffusionBlocksConfig subclasses


def config(family: str, **overrides):
    config_class, fields = FAMILIES[family]
    return config_class(**{**fields, **overrides})


class TinyModels:
    """Every model, pipeline and scheduler a row needs, built on first use (a row builds only what it calls)."""

    def __init__(self, folder):
        self.folder = folder

    @cached_property
    def dit(self) -> DiffusionBlocksDiTModel:
        return randomize_(DiffusionBlocksDiTModel(config("dit")), std=0.02).eval()

    @cached_property
    def image_pipeline(self) -> DiffusionBlocksImagePipeline:
        pipeline = DiffusionBlocksImagePipeline(self.dit, DiffusionBlocksScheduler(**self.dit.config.scheduler_kwargs()))
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    @cached_property
    def masked_lm(self) -> DiffusionBlocksForMaskedLM:
        return randomize_(DiffusionBlocksForMaskedLM(config("masked_lm")), std=0.2).eval()

    @cached_property
    def text_pipeline(self) -> DiffusionBlocksTextPipeline:
        tokenizer = CharacterTokenizer(characters=CHARACTERS)
        assert len(tokenizer) == MASKED_LM["vocab_size"] and tokenizer.mask_token_id == MASKED_LM["mask_token_id"]
        pipeline = DiffusionBlocksTextPipeline(self.masked_lm, self.masked_lm.build_scheduler(), tokenizer)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    @cached_property
    def causal_lm(self) -> DiffusionBlocksForCausalLM:
        return randomize_(DiffusionBlocksForCausalLM(config("causal_lm")), std=0.2).eval()

    @cached_property
    def vit(self) -> DiffusionBlocksForImageClassification:
        return randomize_(DiffusionBlocksForImageClassification(config("vit"))).eval()

    @cached_property
    def recurrent(self) -> DiffusionBlocksRecurrentForCausalLM:
        return randomize_(DiffusionBlocksRecurrentForCausalLM(config("recurrent")), std=0.1).eval()

    @cached_property
    def saved_dit_folder(self) -> str:
        path = str(self.folder / "dit")
        self.dit.save_pretrained(path)
        return path

    @cached_property
    def saved_pipeline_folder(self) -> str:
        path = str(self.folder / "pipeline")
        self.image_pipeline.save_pretrained(path)
        return path

    @cached_property
    def diffusers_pipeline_folder(self) -> str:
        """A diffusers pipeline folder of a tiny DiT transformer (model_index.json, scheduler/, transformer/)."""
        from diffusers import DDIMScheduler, DiTTransformer2DModel

        path = self.folder / "diffusers_dit"
        torch.manual_seed(0)
        DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                              sample_size=8, patch_size=2, num_embeds_ada_norm=1000).save_pretrained(path / "transformer")
        DDIMScheduler().save_pretrained(path / "scheduler")
        (path / "model_index.json").write_text(json.dumps({
            "_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"],
            "scheduler": ["diffusers", "DDIMScheduler"]}))
        return str(path)

    @cached_property
    def converted_folder(self) -> str:
        from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer

        path = str(self.folder / "converted")
        convert_pretrained_transformer(self.diffusers_pipeline_folder, path, 2, init="contiguous")  # rows edit the slices
        return path

    def tampered_copy(self, name: str, tamper: Callable[[Path], Any]) -> Path:
        """A fresh copy of the folder `name` (an attribute of these models), changed by `tamper`."""
        copy = Path(tempfile.mkdtemp(dir=self.folder)) / name
        shutil.copytree(getattr(self, name), copy, symlinks=True)
        tamper(copy)
        return copy

    @staticmethod
    def scheduler(num_inference_steps: int | None = None) -> DiffusionBlocksScheduler:
        scheduler = DiffusionBlocksScheduler()
        if num_inference_steps is not None:
            scheduler.set_timesteps(num_inference_steps)
        return scheduler

    @staticmethod
    def masked_scheduler(num_inference_steps: int | None = None) -> MaskedDiffusionBlocksScheduler:
        scheduler = MaskedDiffusionBlocksScheduler()
        if num_inference_steps is not None:
            scheduler.set_timesteps(num_inference_steps)
        return scheduler


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("bad_input"))


def images(batch: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dtype)


def tokens(batch: int = 1, length: int = 4, vocab: int = 12) -> torch.Tensor:
    return torch.randint(2, vocab, (batch, length), generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class BadInput:
    """One row: `call(models)` must raise `error` with `names` (the argument) and `allowed` in its message."""

    entry_point: str
    label: str
    call: Callable[[TinyModels], Any]
    names: str
    allowed: str = ""
    guard: bool = False  # already refused by name before this table: a regression guard
    error: type[Exception] = ValueError
    open_issue: str = ""  # not fixed yet (strict xfail: the row fails loudly once it is fixed)

    @property
    def id(self) -> str:
        return f"{'guard:' if self.guard else ''}{self.entry_point}[{self.label}]"


def image_call(**kwargs):
    kwargs = {"class_labels": [0], "num_inference_steps": 3, "output_type": "pt", **kwargs}
    return lambda m: m.image_pipeline(**kwargs)


def text_call(**kwargs):
    kwargs = {"sequence_length": 8, "num_inference_steps": 3, **kwargs}
    return lambda m: m.text_pipeline(**kwargs)


def causal_generate(**kwargs):
    kwargs = {"input_ids": tokens(vocab=40), "max_new_tokens": 2, **kwargs}
    return lambda m: m.causal_lm.generate(**kwargs)


def recurrent_generate(**kwargs):
    kwargs = {"input_ids": tokens(), "max_new_tokens": 2, "num_iterations": 2, **kwargs}
    return lambda m: m.recurrent.generate(**kwargs)


PIPELINE_ROWS = [
    BadInput("ImagePipeline.__call__", "guidance_scale=nan", image_call(guidance_scale=NAN), "guidance_scale", ">= 1.0"),
    BadInput("ImagePipeline.__call__", "guidance_scale=inf", image_call(guidance_scale=INF), "guidance_scale", "finite"),
    BadInput("ImagePipeline.__call__", "guidance_scale='2'", image_call(guidance_scale="2"), "guidance_scale", ">= 1.0"),
    BadInput("ImagePipeline.__call__", "guidance_scale=0.5", image_call(guidance_scale=0.5), "guidance_scale", ">= 1.0",
             guard=True),
    BadInput("ImagePipeline.__call__", "class_labels=[1.7]", image_call(class_labels=[1.7]), "class_labels", "[0, 9]"),
    BadInput("ImagePipeline.__call__", "class_labels=float tensor", image_call(class_labels=torch.tensor([2.5, 3.0])),
             "class_labels", "integers"),
    BadInput("ImagePipeline.__call__", "class_labels=True", image_call(class_labels=True), "class_labels", "integers"),
    BadInput("ImagePipeline.__call__", "class_labels=[10]", image_call(class_labels=[10]), "class_labels", "[0, 9]",
             guard=True),
    BadInput("ImagePipeline.__call__", "num_inference_steps=2.5", image_call(num_inference_steps=2.5),
             "num_inference_steps", "integer >= 1"),
    BadInput("ImagePipeline.__call__", "num_inference_steps=True", image_call(num_inference_steps=True),
             "num_inference_steps", "integer >= 1"),
    BadInput("ImagePipeline.__call__", "num_inference_steps=2<num_blocks", image_call(num_inference_steps=2),
             "num_inference_steps", ">= 3"),
    BadInput("ImagePipeline.__call__", "num_inference_steps=0", image_call(num_inference_steps=0),
             "num_inference_steps", ">= 1", guard=True),
    BadInput("ImagePipeline.__call__", "batch_size=-1", image_call(class_labels=None, batch_size=-1), "batch_size", ">= 1"),
    BadInput("ImagePipeline.__call__", "batch_size=0", image_call(class_labels=None, batch_size=0), "batch_size", ">= 1"),
    BadInput("ImagePipeline.__call__", "batch_size=2.5", image_call(class_labels=None, batch_size=2.5), "batch_size",
             "integer"),
    BadInput("ImagePipeline.__call__", "batch_size!=len(class_labels)", image_call(class_labels=[0, 1], batch_size=3),
             "batch_size", "class_labels=None"),
    BadInput("TextPipeline.__call__", "prompt=123", text_call(prompt=123), "prompt", "a string"),
    BadInput("TextPipeline.__call__", "prompt=[]", text_call(prompt=[]), "prompt", "non-empty list", guard=True),
    BadInput("TextPipeline.__call__", "temperature=nan", text_call(temperature=NAN), "temperature", "> 0"),
    BadInput("TextPipeline.__call__", "temperature=inf", text_call(temperature=INF), "temperature", "finite"),
    BadInput("TextPipeline.__call__", "temperature=0", text_call(temperature=0), "temperature", "> 0", guard=True),
    BadInput("TextPipeline.__call__", "num_samples=True", text_call(num_samples=True), "num_samples", ">= 1"),
    BadInput("TextPipeline.__call__", "num_samples=-1", text_call(num_samples=-1), "num_samples", ">= 1", guard=True),
    BadInput("TextPipeline.__call__", "num_inference_steps=2.5", text_call(num_inference_steps=2.5),
             "num_inference_steps", "integer >= 1"),
    BadInput("TextPipeline.__call__", "num_inference_steps=2<num_blocks", text_call(num_inference_steps=2),
             "num_inference_steps", ">= 3"),
    BadInput("TextPipeline.__call__", "sequence_length=True", text_call(sequence_length=True), "sequence_length",
             "[1, 24]"),
    BadInput("TextPipeline.__call__", "sequence_length=25", text_call(sequence_length=25), "sequence_length", "[1, 24]",
             guard=True),
]

GENERATE_ROWS = [
    BadInput("CausalLM.generate", "empty prompt", causal_generate(input_ids=torch.zeros(1, 0, dtype=torch.long)),
             "input_ids", "at least one token"),
    BadInput("CausalLM.generate", "prompt=list", causal_generate(input_ids=[[3, 4]]), "input_ids", "LongTensor"),
    BadInput("CausalLM.generate", "prompt=float", causal_generate(input_ids=tokens(vocab=40).float()), "input_ids",
             "LongTensor", guard=True),
    BadInput("CausalLM.generate", "max_new_tokens=True", causal_generate(max_new_tokens=True), "max_new_tokens", ">= 1"),
    BadInput("CausalLM.generate", "max_new_tokens=-1", causal_generate(max_new_tokens=-1), "max_new_tokens", "",
             guard=True),
    BadInput("CausalLM.generate", "temperature=nan", causal_generate(do_sample=True, temperature=NAN), "temperature",
             "> 0", guard=True),
    BadInput("CausalLM.generate", "temperature=inf", causal_generate(do_sample=True, temperature=INF), "temperature",
             "finite"),
    BadInput("CausalLM.generate", "top_p=1.5", causal_generate(do_sample=True, top_p=1.5), "top_p", "(0, 1]",
             guard=True),
    BadInput("CausalLM.generate", "top_p=nan", causal_generate(do_sample=True, top_p=NAN), "top_p", "(0, 1]", guard=True),
    BadInput("CausalLM.generate", "top_k=True", causal_generate(do_sample=True, top_k=True), "top_k", ">= 0",
             guard=True),
    BadInput("CausalLM.generate", "num_inference_steps=2<num_blocks", causal_generate(num_inference_steps=2),
             "num_inference_steps", ">= 4"),
    BadInput("CausalLM.generate", "num_inference_steps=2.5", causal_generate(num_inference_steps=2.5),
             "num_inference_steps", ">= 1", guard=True),
    BadInput("CausalLM.forward", "num_inference_steps=0",
             lambda m: m.causal_lm(tokens(vocab=40), num_inference_steps=0), "num_inference_steps", ">= 1"),
    BadInput("RecurrentLM.generate", "empty prompt", recurrent_generate(input_ids=torch.zeros(1, 0, dtype=torch.long)),
             "input_ids", "at least one token"),
    BadInput("RecurrentLM.generate", "top_p=1.5", recurrent_generate(do_sample=True, top_p=1.5), "top_p", "(0, 1]"),
    BadInput("RecurrentLM.generate", "temperature=nan", recurrent_generate(do_sample=True, temperature=NAN),
             "temperature", "", guard=True),
    BadInput("RecurrentLM.generate", "max_new_tokens=True", recurrent_generate(max_new_tokens=True), "max_new_tokens",
             ">= 1"),
    BadInput("RecurrentLM.generate", "num_iterations=2.5", recurrent_generate(num_iterations=2.5), "num_iterations",
             ">= 1", guard=True),
    BadInput("RecurrentLM.iterate", "num_gradient_iterations=-1",
             lambda m: m.recurrent.iterate(tokens(), num_iterations=2, num_gradient_iterations=-1),
             "num_gradient_iterations", "[1, 2]"),
    BadInput("RecurrentLM.iterate", "num_gradient_iterations=2.5",
             lambda m: m.recurrent.iterate(tokens(), num_iterations=2, num_gradient_iterations=2.5),
             "num_gradient_iterations", "[1, 2]"),
    BadInput("TruncatedBPTTLoss.__init__", "mean_recurrence=inf", lambda m: TruncatedBPTTLoss(mean_recurrence=INF),
             "mean_recurrence", "> 0"),
    BadInput("TruncatedBPTTLoss.__init__", "bptt_steps=True", lambda m: TruncatedBPTTLoss(bptt_steps=True), "bptt_steps",
             ">= 1"),
    BadInput("TruncatedBPTTLoss.__init__", "mean_recurrence=nan", lambda m: TruncatedBPTTLoss(mean_recurrence=NAN),
             "mean_recurrence", "> 0", guard=True),
    BadInput("ViT.forward", "num_inference_steps=2.5", lambda m: m.vit(images(), num_inference_steps=2.5),
             "num_inference_steps", ">= 1"),
    BadInput("ViT.forward", "num_inference_steps=True", lambda m: m.vit(images(), num_inference_steps=True),
             "num_inference_steps", ">= 1"),
    BadInput("ViT.forward", "num_inference_steps=2<num_blocks", lambda m: m.vit(images(), num_inference_steps=2),
             "num_inference_steps", ">= 3"),
    BadInput("ViT.forward", "num_inference_steps=0", lambda m: m.vit(images(), num_inference_steps=0),
             "num_inference_steps", ">= 1", guard=True),
    BadInput("ViT.forward", "labels=float", lambda m: m.vit(images(), labels=torch.tensor([1.5, 2.5])), "labels",
             "[0, 9]"),
]

MODEL_ROWS = [
    BadInput("DiT.forward_block", "sigma=nan", lambda m: m.dit.forward_block(0, images(), NAN), "sigma", "> 0"),
    BadInput("DiT.forward_block", "sigma=0", lambda m: m.dit.forward_block(0, images(), 0.0), "sigma", "> 0"),
    BadInput("DiT.forward_block", "class_labels=float",
             lambda m: m.dit.forward_block(0, images(), 1.0, torch.tensor([1.5, 2.7])), "class_labels", "[0, 10]"),
    BadInput("DiT.forward", "sigma=nan", lambda m: m.dit(images(), torch.tensor([NAN, 1.0])), "sigma", ""),
    BadInput("MaskedLM.forward_block", "t=nan", lambda m: m.masked_lm.forward_block(0, tokens(2, 5), NAN), "t",
             "[0, 1]"),
    BadInput("MaskedLM.forward_block", "t=1.5", lambda m: m.masked_lm.forward_block(0, tokens(2, 5), 1.5), "t", "[0, 1]",
             guard=True),
    BadInput("CausalLM.forward_block", "sigma=inf",
             lambda m: m.causal_lm.forward_block(0, tokens(vocab=40), torch.zeros(1, 4, 16), INF), "sigma", "finite"),
    BadInput("ViT.forward_block", "sigma=nan",
             lambda m: m.vit.forward_block(0, images(), torch.zeros(2, 10), NAN), "sigma", "> 0"),
    BadInput("RecurrentLM.forward_block", "sigma=nan",
             lambda m: m.recurrent.forward_block(0, tokens(), torch.zeros(1, 4, 12), NAN), "sigma", "> 0"),
]

SCHEDULER_ROWS = [
    BadInput("DiffusionBlocksScheduler.__init__", "sigma_max=inf", lambda m: DiffusionBlocksScheduler(sigma_max=INF),
             "sigma_max", "finite"),
    BadInput("DiffusionBlocksScheduler.__init__", "overlap=1", lambda m: DiffusionBlocksScheduler(overlap=1.0), "overlap",
             "[0, 1)"),
    BadInput("DiffusionBlocksScheduler.__init__", "p_mean=nan", lambda m: DiffusionBlocksScheduler(p_mean=NAN), "p_mean",
             "finite"),
    BadInput("DiffusionBlocksScheduler.__init__", "sigma_data=nan", lambda m: DiffusionBlocksScheduler(sigma_data=NAN),
             "sigma_data", "> 0", guard=True),
    BadInput("DiffusionBlocksScheduler.set_timesteps", "2.5", lambda m: m.scheduler().set_timesteps(2.5),
             "num_inference_steps", "integer >= 1"),
    BadInput("DiffusionBlocksScheduler.set_timesteps", "True", lambda m: m.scheduler().set_timesteps(True),
             "num_inference_steps", "integer >= 1"),
    BadInput("DiffusionBlocksScheduler.set_timesteps", "'6'", lambda m: m.scheduler().set_timesteps("6"),
             "num_inference_steps", "integer >= 1"),
    BadInput("DiffusionBlocksScheduler.set_timesteps", "-1", lambda m: m.scheduler().set_timesteps(-1),
             "num_inference_steps", ">= 1", guard=True),
    BadInput("DiffusionBlocksScheduler.block_index_for_sigma", "nan",
             lambda m: m.scheduler().block_index_for_sigma(torch.tensor([1.0, NAN])), "sigma", "[sigma_min="),
    BadInput("DiffusionBlocksScheduler.block_index_for_sigma", "inf",
             lambda m: m.scheduler().block_index_for_sigma(INF), "sigma", "[sigma_min=", guard=True),
    BadInput("DiffusionBlocksScheduler.add_noise", "sigma=nan",
             lambda m: m.scheduler().add_noise(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([NAN, 1.0])),
             "timesteps", ">= 0"),
    BadInput("DiffusionBlocksScheduler.add_noise", "sigma=-1",
             lambda m: m.scheduler().add_noise(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([-1.0, 1.0])),
             "timesteps", ">= 0"),
    BadInput("DiffusionBlocksScheduler.sample_training_sigmas", "batch_size=-1",
             lambda m: m.scheduler().sample_training_sigmas(0, -1), "batch_size", ">= 1"),
    BadInput("DiffusionBlocksScheduler.sample_training_sigmas", "batch_size=2.5",
             lambda m: m.scheduler().sample_training_sigmas(0, 2.5), "batch_size", ">= 1"),
    BadInput("DiffusionBlocksScheduler.sample_training_sigmas", "block_index=1.0",
             lambda m: m.scheduler().sample_training_sigmas(1.0, 4), "block_index", "[0, 2]", guard=True),
    BadInput("DiffusionBlocksScheduler.step", "model_output shape differs",
             lambda m: m.scheduler(3).step(torch.zeros(2), 80.0, torch.zeros(2, 1)), "model_output", "(2, 1)"),
    BadInput("DiffusionBlocksScheduler.step", "timestep=nan",
             lambda m: m.scheduler(3).step(torch.zeros(2), NAN, torch.zeros(2)), "timestep", "", guard=True),
    BadInput("MaskedDiffusionBlocksScheduler.__init__", "num_blocks=2.0",
             lambda m: MaskedDiffusionBlocksScheduler(num_blocks=2.0), "num_blocks", ">= 1", guard=True),
    BadInput("MaskedDiffusionBlocksScheduler.set_timesteps", "2.5", lambda m: m.masked_scheduler().set_timesteps(2.5),
             "num_inference_steps", "integer >= 1"),
    BadInput("MaskedDiffusionBlocksScheduler.set_timesteps", "True", lambda m: m.masked_scheduler().set_timesteps(True),
             "num_inference_steps", "integer >= 1"),
    BadInput("MaskedDiffusionBlocksScheduler.block_index_for_time", "nan",
             lambda m: m.masked_scheduler().block_index_for_time(NAN), "t", "[0, 1]"),
    BadInput("MaskedDiffusionBlocksScheduler.block_index_for_time", "1.5",
             lambda m: m.masked_scheduler().block_index_for_time(1.5), "t", "[0, 1]", guard=True),
    BadInput("MaskedDiffusionBlocksScheduler.add_noise", "t=nan",
             lambda m: m.masked_scheduler().add_noise(torch.zeros(2, 3, dtype=torch.long), torch.tensor([NAN, 0.5]), 5),
             "t", "[0, 1]"),
    BadInput("MaskedDiffusionBlocksScheduler.add_noise", "t=1.5",
             lambda m: m.masked_scheduler().add_noise(torch.zeros(2, 3, dtype=torch.long), torch.tensor([1.5, 0.5]), 5),
             "t", "[0, 1]"),
    BadInput("masked_lm.stratified_times", "batch_size=-1",
             lambda m: stratified_times(0.0, 0.5, -1), "batch_size", ">= 1"),
    BadInput("MaskedDiffusionBlocksScheduler.training_loss_weight", "t=0",
             lambda m: m.masked_scheduler().training_loss_weight(2, torch.tensor([0.0, 0.1])), "t", "(0, 1]"),
    BadInput("MaskedDiffusionBlocksScheduler.step", "temperature=nan",
             lambda m: m.masked_scheduler(3).step(torch.zeros(1, 3, 6), 1.0, torch.full((1, 3), 5), 5, temperature=NAN),
             "temperature", "> 0"),
    BadInput("MaskedDiffusionBlocksScheduler.step", "temperature=0",
             lambda m: m.masked_scheduler(3).step(torch.zeros(1, 3, 6), 1.0, torch.full((1, 3), 5), 5, temperature=0),
             "temperature", "> 0", guard=True),
    BadInput("MaskedDiffusionBlocksScheduler.step", "model_output shape differs",
             lambda m: m.masked_scheduler(3).step(torch.zeros(1, 4, 6), 1.0, torch.full((1, 3), 5), 5), "model_output",
             "vocab_size"),
    BadInput("MaskedDiffusionBlocksScheduler.step", "timestep=nan",
             lambda m: m.masked_scheduler(3).step(torch.zeros(1, 3, 6), NAN, torch.full((1, 3), 5), 5), "timestep", "",
             guard=True),
]


def config_row(family: str, label: str, overrides: dict, names: str, allowed: str = "", guard: bool = False) -> BadInput:
    return BadInput(f"{FAMILIES[family][0].__name__}", label, lambda m: config(family, **overrides), names, allowed, guard)


# The partition and preconditioning fields are checked once (partition.py, preconditioning.py) for every family.
PARTITION_CASES = [
    ("sigma_max=inf", {"sigma_max": INF}, "sigma_max", "finite", False),
    ("sigma_min=nan", {"sigma_min": NAN}, "sigma_min", "> 0", True),
    ("sigma_min>=sigma_max", {"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min", "< sigma_max", True),
    ("p_mean=nan", {"p_mean": NAN}, "p_mean", "finite", False),
    ("p_std=inf", {"p_std": INF}, "p_std", "finite", False),
    ("overlap=1", {"overlap": 1.0}, "overlap", "[0, 1)", False),
    ("overlap=-0.1", {"overlap": -0.1}, "overlap", "", True),
    ("sigma_data=inf", {"sigma_data": INF}, "sigma_data", "finite", False),
    ("sigma_data=0", {"sigma_data": 0.0}, "sigma_data", "> 0", True),
]
# The block fields of every family (BlockPartitionedConfig).
BLOCK_CASES = [
    ("num_hidden_layers=True", {"num_hidden_layers": True, "num_blocks": 1}, "num_hidden_layers", ">= 1", False),
    ("layers_per_block=[1.5, 1.5]", {"num_hidden_layers": 2, "num_blocks": 2, "layers_per_block": [1.5, 1.5]},
     "layers_per_block", ">= 1", False),
    ("num_blocks=0", {"num_blocks": 0}, "num_blocks", "[1, 1024]", True),
    ("num_blocks=2000", {"num_hidden_layers": 2000, "num_blocks": 2000}, "num_blocks", "[1, 1024]", False),
]
CONFIG_ROWS = [
    *[config_row(family, label, overrides, names, allowed, guard)
      for family in CONTINUOUS_FAMILIES for label, overrides, names, allowed, guard in PARTITION_CASES],
    *[config_row(family, label, overrides, names, allowed, guard)
      for family in FAMILIES for label, overrides, names, allowed, guard in BLOCK_CASES],
    config_row("dit", "hidden_size=32.0", {"hidden_size": 32.0}, "hidden_size", ">= 1"),
    config_row("dit", "patch_size=0", {"patch_size": 0}, "patch_size", ">= 1"),
    config_row("dit", "num_channels=-1", {"num_channels": -1}, "num_channels", ">= 1"),
    config_row("dit", "layer_norm_eps=0", {"layer_norm_eps": 0.0}, "layer_norm_eps", "> 0"),
    config_row("dit", "class_dropout_prob=1", {"class_dropout_prob": 1.0}, "class_dropout_prob", "[0, 1)", guard=True),
    config_row("masked_lm", "rope_theta=inf", {"rope_theta": INF}, "rope_theta", "finite"),
    config_row("masked_lm", "layer_norm_eps=nan", {"layer_norm_eps": NAN}, "layer_norm_eps", "> 0"),
    config_row("masked_lm", "mask_token_id=True", {"mask_token_id": True}, "mask_token_id", "[0, 31]"),
    config_row("masked_lm", "mask_token_id=32", {"mask_token_id": 32}, "mask_token_id", "[0, 31]", guard=True),
    config_row("causal_lm", "rope_theta=inf", {"rope_theta": INF}, "rope_theta", "finite"),
    config_row("causal_lm", "rms_norm_eps=0", {"rms_norm_eps": 0.0}, "rms_norm_eps", "> 0"),
    config_row("causal_lm", "target_embedding_seed=1.5", {"target_embedding_seed": 1.5}, "target_embedding_seed",
               "integer"),
    config_row("causal_lm", "bos_token_id=True", {"bos_token_id": True}, "bos_token_id", "[0, 39]"),
    config_row("causal_lm", "num_inference_steps=2<num_blocks", {"num_inference_steps": 2}, "num_inference_steps",
               ">= 4"),
    config_row("causal_lm", "num_inference_steps=True", {"num_inference_steps": True}, "num_inference_steps", ">= 1"),
    config_row("vit", "layer_norm_eps=-1e-6", {"layer_norm_eps": -1e-6}, "layer_norm_eps", "> 0"),
    config_row("vit", "label_embedding_dim=4", {"label_embedding_dim": 4}, "label_embedding_dim", ">= num_labels",
               guard=True),
    config_row("recurrent", "layer_norm_eps=inf", {"layer_norm_eps": INF}, "layer_norm_eps", "finite"),
    config_row("recurrent", "num_iterations=True", {"num_iterations": True}, "num_iterations", ">= 1", guard=True),
    config_row("recurrent", "num_coda_layers=1.5", {"num_coda_layers": 1.5}, "num_coda_layers", ">= 0", guard=True),
]

FROM_PRETRAINED_ROWS = [
    BadInput("DiTModel.from_pretrained", "missing folder",
             lambda m: DiffusionBlocksDiTModel.from_pretrained(str(m.folder / "missing")), "missing", "", guard=True),
    BadInput("DiTModel.from_pretrained", "block_index=3",
             lambda m: DiffusionBlocksDiTModel.from_pretrained(m.saved_dit_folder, block_index=3), "block_index", "[0, 2]",
             guard=True),
    BadInput("DiTModel.from_pretrained", "block_index=1.0",
             lambda m: DiffusionBlocksDiTModel.from_pretrained(m.saved_dit_folder, block_index=1.0), "block_index",
             "[0, 2]"),
    BadInput("DiTModel.from_pretrained", "block_index=True",
             lambda m: DiffusionBlocksDiTModel.from_pretrained(m.saved_dit_folder, block_index=True), "block_index",
             "[0, 2]", guard=True),
    BadInput("ImagePipeline.from_pretrained", "missing folder",
             lambda m: DiffusionBlocksImagePipeline.from_pretrained(str(m.folder / "missing")), "missing", "",
             guard=True),
]



def cli(*argv: str) -> Callable[[TinyModels], Any]:
    """The `hf-diffusionblocks` command line as a table row: a non-zero exit becomes a ValueError carrying what it
    printed on stderr (one `error:` line, never a traceback, is part of what the row checks)."""

    def call(models: TinyModels) -> None:
        import contextlib
        import io

        from hf_diffusionblocks_cli import main

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                status = main([arg.replace("{folder}", str(models.folder)) for arg in argv])
            except SystemExit as exit:  # argparse's own errors (unknown choice, not a number)
                status = exit.code
        if status != 0:
            assert "Traceback" not in stderr.getvalue(), stderr.getvalue()
            raise ValueError(stderr.getvalue())

    return call


def train_dit(*flags: str) -> Callable[[TinyModels], Any]:
    """`examples/train_dit.py` with tiny settings and `flags`: its arguments are checked before anything is
    written, so these rows train nothing."""

    def call(models: TinyModels) -> None:
        from script_testing import load_script

        output_dir = models.folder / "train_dit_bad_flags"
        load_script("train_dit").main(["--output_dir", str(output_dir), "--max_train_steps", "1", "--report_to", "none",
                                       *flags])

    return call


CLI_ROWS = [
    BadInput("cli partition", "--num_blocks 0", cli("partition", "--num_blocks", "0"), "num_blocks", "[1, 1024]"),
    BadInput("cli partition", "--overlap 1.5", cli("partition", "--overlap", "1.5"), "overlap", "[0, 1)"),
    BadInput("cli partition", "--sigma_min nan", cli("partition", "--sigma_min", "nan"), "sigma_min", "> 0"),
    BadInput("cli partition", "--p_std -1", cli("partition", "--p_std", "-1"), "p_std", "> 0"),
    BadInput("cli partition", "--layers_per_block 2 2", cli("partition", "--layers_per_block", "2", "2"),
             "layers_per_block", "num_blocks=3 entries", guard=True),
    BadInput("cli info", "missing folder", cli("info", "{folder}/missing"), "missing", "neither an existing local folder",
             guard=True),
    BadInput("cli assemble", "missing input", cli("assemble", "{folder}/out", "{folder}/missing"), "missing",
             "not a folder", guard=True),
]

SCRIPT_FLAG_ROWS = [
    BadInput("train_dit.py", "--learning_rate nan", train_dit("--learning_rate", "nan"), "--learning_rate", "> 0"),
    BadInput("train_dit.py", "--learning_rate -1", train_dit("--learning_rate", "-1"), "--learning_rate", "> 0"),
    BadInput("train_dit.py", "--max_grad_norm nan", train_dit("--max_grad_norm", "nan"), "--max_grad_norm", ">= 0"),
    BadInput("train_dit.py", "--adam_beta1 1.5", train_dit("--adam_beta1", "1.5"), "--adam_beta1", "[0, 1)"),
    BadInput("train_dit.py", "--adam_epsilon 0", train_dit("--adam_epsilon", "0"), "--adam_epsilon", "> 0"),
    BadInput("train_dit.py", "--checkpoints_total_limit 0", train_dit("--checkpoints_total_limit", "0"),
             "--checkpoints_total_limit", ">= 1"),
    BadInput("train_dit.py", "--ema_decay 1", train_dit("--use_ema", "--ema_decay", "1"), "--ema_decay", "[0, 1)"),
    BadInput("train_dit.py", "--gradient_accumulation_steps 0", train_dit("--gradient_accumulation_steps", "0"),
             "--gradient_accumulation_steps", ">= 1"),
    BadInput("train_dit.py", "--guidance_scale nan", train_dit("--guidance_scale", "nan"), "--guidance_scale", ">= 1"),
    BadInput("train_dit.py", "--guidance_scale inf", train_dit("--guidance_scale", "inf"), "--guidance_scale", "finite"),
    BadInput("train_dit.py", "--train_batch_size 0", train_dit("--train_batch_size", "0"), "--train_batch_size", ">= 1",
             guard=True),
    BadInput("train_dit.py", "--overlap 1.0", train_dit("--overlap", "1.0"), "overlap", "[0, 1)", guard=True),
    BadInput("train_dit.py", "--block_index 5", train_dit("--block_index", "5"), "block_index", "[0, 2]", guard=True),
]

# ---- files read from disk: paths stay inside their folder, every error names the file ----------------------------


def folder_cli(folder: str, tamper: Callable[[Path], Any], *argv: str) -> Callable[[TinyModels], Any]:
    """The command line on a fresh copy of the folder `folder` (a `TinyModels` attribute) changed by `tamper`;
    `{copy}` in `argv` is the copy."""

    def call(models: TinyModels) -> None:
        copy = models.tampered_copy(folder, tamper)
        cli(*[argument.replace("{copy}", str(copy)) for argument in argv])(models)

    return call


def edit_json(relative: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """A tamper: `change` edits the JSON of `relative` in place (or returns the new content)."""

    def tamper(folder: Path) -> None:
        payload = json.loads((folder / relative).read_text())
        changed = change(payload)
        (folder / relative).write_text(json.dumps(payload if changed is None else changed))

    return tamper


def write_text(relative: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).write_text(text)


def truncate(relative: str) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        data = (folder / relative).read_bytes()
        (folder / relative).write_bytes(data[: len(data) // 2])

    return tamper


def sharded(shard: Callable[[Path], str], link: str | None = None) -> Callable[[Path], None]:
    """A tamper: the transformer's weights move outside the pipeline folder (a real safetensors file there), and
    an index names them by `shard(folder)` (optionally through a link `link` inside the folder)."""

    def tamper(folder: Path) -> None:
        outside = folder.parent / "outside_shard.safetensors"
        os.replace(folder / "transformer" / "diffusion_pytorch_model.safetensors", outside)
        if link is not None:
            os.symlink(outside, folder / "transformer" / link)
        (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": {"pos_embed.proj.weight": shard(folder)}}))

    return tamper


def edit_model_index(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    return edit_json("model_index.json", change)


def rename_key(payload: dict, old: str, new: str) -> dict:
    return {new if key == old else key: value for key, value in payload.items()}


CONVERT = ("convert", "{copy}", "{copy}_out", "--num_blocks", "2")
INDEX = "transformer/diffusion_pytorch_model.safetensors.index.json"
MANIFEST = "diffusion_blocks.json"
DIT_EMBEDDER = "transformer_blocks.0.norm1.emb"

CONVERT_ROWS = [
    BadInput("cli convert", "index shard ../../outside", folder_cli(
        "diffusers_pipeline_folder", sharded(lambda _: "../../outside_shard.safetensors"), *CONVERT),
        "shard '../../outside_shard.safetensors'", "'..' are refused"),
    BadInput("cli convert", "index shard absolute path", folder_cli(
        "diffusers_pipeline_folder", sharded(lambda folder: str(folder.parent / "outside_shard.safetensors")), *CONVERT),
        "diffusion_pytorch_model.safetensors.index.json: shard", "absolute paths"),
    BadInput("cli convert", "index shard linked outside", folder_cli(
        "diffusers_pipeline_folder", sharded(lambda _: "linked.safetensors", link="linked.safetensors"), *CONVERT),
        "shard 'linked.safetensors'", "leads outside"),
    BadInput("cli convert", "--subfolder ../", folder_cli("diffusers_pipeline_folder", lambda _: None, *CONVERT,
                                                           "--subfolder", "../diffusers_pipeline_folder/transformer"),
             "subfolder '../diffusers_pipeline_folder/transformer'", "'..' are refused"),
    BadInput("cli convert", "index without weight_map", folder_cli(
        "diffusers_pipeline_folder", lambda folder: (sharded(lambda _: "x")(folder), write_text(INDEX, "{}")(folder)),
        *CONVERT), "diffusion_pytorch_model.safetensors.index.json has no weight_map", "tensor name -> shard file"),
    BadInput("cli convert", "config not JSON", folder_cli(
        "diffusers_pipeline_folder", write_text("transformer/config.json", "{ not json"), *CONVERT),
        "transformer/config.json", "not valid JSON"),
    BadInput("cli convert", "scheduler config not JSON", folder_cli(
        "diffusers_pipeline_folder", write_text("scheduler/scheduler_config.json", "[1,"), *CONVERT),
        "scheduler/scheduler_config.json", "not valid JSON"),
    BadInput("cli convert", "scheduler num_train_timesteps='x'", folder_cli(
        "diffusers_pipeline_folder", edit_json("scheduler/scheduler_config.json",
                                               lambda config: config.update(num_train_timesteps="x")), *CONVERT),
        "scheduler/scheduler_config.json: num_train_timesteps", "integer >= 1"),
    BadInput("cli convert", "scheduler config a list", folder_cli(
        "diffusers_pipeline_folder", write_text("scheduler/scheduler_config.json", "[]"), *CONVERT),
        "scheduler/scheduler_config.json holds JSON but not an object", "scheduler config"),
    BadInput("cli convert", "model_index.json a list", folder_cli(
        "diffusers_pipeline_folder", write_text("model_index.json", "[]"), *CONVERT),
        "model_index.json holds JSON but not an object", "pipeline components"),
    BadInput("cli convert", "config without num_layers", folder_cli(
        "diffusers_pipeline_folder", edit_json("transformer/config.json", lambda config: config.pop("num_layers") and None),
        *CONVERT), "transformer/config.json needs an integer 'num_layers'", "the length of transformer_blocks"),
    BadInput("cli convert", "config num_layers='4'", folder_cli(
        "diffusers_pipeline_folder", edit_json("transformer/config.json", lambda config: config.update(num_layers="4")),
        *CONVERT), "transformer/config.json needs an integer 'num_layers'", "got '4'"),
    BadInput("cli convert", "truncated weights", folder_cli(
        "diffusers_pipeline_folder", truncate("transformer/diffusion_pytorch_model.safetensors"), *CONVERT),
        "transformer/diffusion_pytorch_model.safetensors", "truncated or corrupt"),
]


def pipeline_from_tampered(tamper: Callable[[Path], None]) -> Callable[[TinyModels], Any]:
    return lambda m: DiffusionBlocksImagePipeline.from_pretrained(str(m.tampered_copy("saved_pipeline_folder", tamper)))


def outside_component(folder: Path) -> dict:
    """model_index.json's transformer reached through `../../x/transformer`, where a real copy lies."""
    shutil.copytree(folder / "transformer", folder.parent.parent / "x" / "transformer")
    return edit_model_index(lambda index: rename_key(index, "transformer", "../../x/transformer"))(folder)


PIPELINE_FOLDER_ROWS = [
    BadInput("ImagePipeline.from_pretrained", "model_index.json component ../../x/transformer",
             pipeline_from_tampered(outside_component), "component '../../x/transformer'", "no path"),
    BadInput("ImagePipeline.from_pretrained", "model_index.json component /abs",
             pipeline_from_tampered(edit_model_index(lambda index: rename_key(index, "scheduler", "/tmp/scheduler"))),
             "model_index.json: component '/tmp/scheduler'", "no path"),
    BadInput("ImagePipeline.from_pretrained", "model_index.json entry of length 1",
             pipeline_from_tampered(edit_model_index(lambda index: index.update(scheduler=["DiffusionBlocksScheduler"]))),
             "model_index.json: component 'scheduler'", "[library, class name] (or null)"),
]

INFO_ROWS = [
    BadInput("cli info", "converted: truncated stems", folder_cli("converted_folder", truncate("stems.safetensors"),
                                                                 "info", "{copy}"),
             "stems.safetensors cannot be read", "truncated or corrupt"),
    BadInput("cli info", "converted: truncated block", folder_cli("converted_folder", truncate("block_1.safetensors"),
                                                                 "info", "{copy}"),
             "block_1.safetensors cannot be read", "truncated or corrupt"),
    BadInput("cli info", "manifest without time_partition", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.pop("time_partition") and None), "info", "{copy}"),
        "diffusion_blocks.json lacks ['time_partition']", "complete conversion manifest"),
    BadInput("cli info", "manifest not an object", folder_cli("converted_folder", write_text(MANIFEST, "[]"), "info",
                                                              "{copy}"),
             "diffusion_blocks.json holds JSON but not an object", "conversion manifest"),
    BadInput("cli info", "manifest blocks key ../../x", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(
            blocks=rename_key(manifest["blocks"], "1", "../../x"))), "info", "{copy}"),
        "diffusion_blocks.json: blocks must have the keys ['0', '1']", "converted_sha256"),
    BadInput("cli info", "manifest blocks entry not an object", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest["blocks"].update({"1": "x"})), "info", "{copy}"),
        "diffusion_blocks.json: blocks must have the keys", "converted_sha256"),
    BadInput("cli info", "manifest layer_list ../../x", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(layer_list="../../x")), "info", "{copy}"),
        "diffusion_blocks.json: layer_list", "module name"),
    BadInput("cli info", "manifest layer_list of another module", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(layer_list="pos_embed")), "info",
        "{copy}"), "diffusion_blocks.json: layer_list='pos_embed'", "layer_list='transformer_blocks'"),
    BadInput("cli info", "manifest layers_per_block [100, 100]", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(layers_per_block=[100, 100])), "info",
        "{copy}"), "diffusion_blocks.json: layers_per_block=[100, 100] sums to 200", "num_layers=2"),
    BadInput("cli info", "manifest layers_per_block [2]", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(layers_per_block=[2])), "info",
        "{copy}"), "diffusion_blocks.json: time_partition has num_blocks=2", "1 entries"),
    BadInput("cli info", "manifest layers_per_block ['1', '1']", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(layers_per_block=["1", "1"])), "info",
        "{copy}"), "diffusion_blocks.json: layers_per_block[0]", "integer >= 1"),
    BadInput("cli info", "manifest time_partition overlap 'x'", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest["time_partition"].update(overlap="x")), "info",
        "{copy}"), "diffusion_blocks.json: overlap", "[0, 1)"),
    BadInput("cli info", "manifest time_partition unknown field", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest["time_partition"].update(gamma=1)), "info",
        "{copy}"), "diffusion_blocks.json", "gamma"),
    BadInput("cli info", "manifest extra_stems renamed", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(extra_stems={"other": DIT_EMBEDDER})),
        "info", "{copy}"), "diffusion_blocks.json: extra_stems={'other'", "output_conditioning_embedding"),
    BadInput("cli info", "manifest extra_stems from layer 1", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(
            extra_stems={"output_conditioning_embedding": "transformer_blocks.1.norm1.emb"})), "info", "{copy}"),
        "diffusion_blocks.json: extra_stems=", "transformer_blocks.0.norm1.emb"),
    BadInput("cli info", "manifest extra_stems removed", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(extra_stems={})), "info", "{copy}"),
        "diffusion_blocks.json: extra_stems={}", "a converted DiTTransformer2DModel has extra_stems="),
    BadInput("cli info", "manifest extra_stems outside the layers", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(extra_stems={"x": "../../y"})), "info",
        "{copy}"), "diffusion_blocks.json: extra_stems={'x': '../../y'}", "the manifest was edited"),
    BadInput("cli info", "manifest extra_stems not names", folder_cli(
        "converted_folder", edit_json(MANIFEST, lambda manifest: manifest.update(extra_stems={"../x": 1})), "info",
        "{copy}"), "diffusion_blocks.json: extra_stems", "stem names to tensor name prefixes"),
    BadInput("cli info", "model: truncated block", folder_cli("saved_dit_folder", truncate("block_1.safetensors"),
                                                             "info", "{copy}"),
             "block_1.safetensors cannot be read", "truncated or corrupt"),
    BadInput("cli info", "config num_blocks=1000000", folder_cli(
        "saved_dit_folder", edit_json("config.json", lambda config: config.update(
            num_blocks=1_000_000, num_hidden_layers=1_000_000, layers_per_block=None)), "info", "{copy}"),
        "config.json: num_blocks", "[1, 1024]"),
    BadInput("RoutedDiT.from_pretrained", "manifest extra_stems edited",
             lambda m: __import__("hf_diffusionblocks.pretrained.modeling_routed", fromlist=["x"])
             .RoutedDiTTransformer2DModel.from_pretrained(str(m.tampered_copy("converted_folder", edit_json(
                 MANIFEST, lambda manifest: manifest.update(extra_stems={"output_conditioning_embedding": "transformer_blocks.1.norm1.emb"}))))),
             "diffusion_blocks.json: extra_stems", "the manifest was edited"),
]

BAD_INPUTS = (PIPELINE_ROWS + GENERATE_ROWS + MODEL_ROWS + SCHEDULER_ROWS + CONFIG_ROWS + FROM_PRETRAINED_ROWS
              + CLI_ROWS + SCRIPT_FLAG_ROWS + CONVERT_ROWS + PIPELINE_FOLDER_ROWS + INFO_ROWS)


def test_row_ids_are_unique():
    ids = [case.id for case in BAD_INPUTS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.open_issue)] if case.open_issue else [])
        for case in BAD_INPUTS
    ],
)
def test_bad_input_raises_naming_the_argument(case: BadInput, models: TinyModels):
    with pytest.raises(case.error) as raised:
        case.call(models)
    message = str(raised.value)
    assert case.names in message, f"the message does not name {case.names!r}: {message}"
    assert case.allowed in message, f"the message does not say what is allowed ({case.allowed!r}): {message}"


# ---- inputs that must work -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkingInput:
    """`call(models, variant)` with the variant input must give `call(models, reference)`'s result (to `atol`)."""

    label: str
    call: Callable[[TinyModels, Any], torch.Tensor]
    reference: Any
    variant: Any
    atol: float = 1e-5
    guard: bool = False  # already worked before this table


def image_pipeline_images(models: TinyModels, class_labels) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return models.image_pipeline(class_labels, num_inference_steps=3, generator=generator, output_type="pt").images


def scheduler_step(models: TinyModels, dtype: torch.dtype) -> torch.Tensor:
    scheduler = models.scheduler(3)
    sample, denoised = torch.full((2,), 40.0, dtype=dtype), torch.full((2,), 0.3, dtype=dtype)
    output = scheduler.step(denoised, scheduler.timesteps[0], sample).prev_sample
    assert output.dtype == dtype
    return output.double()


WORKING_INPUTS = [
    WorkingInput("DiT.forward_block float64 sample",
                 lambda m, dtype: m.dit.forward_block(0, images(dtype=dtype) * 5, 2.0, [1, 2]).sample.double(),
                 torch.float32, torch.float64),
    WorkingInput("DiT.forward float64 sample",
                 lambda m, dtype: m.dit(images(dtype=dtype) * 5, torch.tensor([30.0, 0.1]), [1, 2]).sample.double(),
                 torch.float32, torch.float64),
    WorkingInput("ViT.forward float64 pixel_values", lambda m, dtype: m.vit(images(dtype=dtype)).logits,
                 torch.float32, torch.float64),
    WorkingInput("CausalLM.forward_block float64 noisy_embeddings",
                 lambda m, dtype: m.causal_lm.forward_block(
                     0, tokens(vocab=40), torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0)).to(dtype), 3.0
                 ).logits, torch.float32, torch.float64),
    WorkingInput("RecurrentLM.forward_block float64 noisy_targets",
                 lambda m, dtype: m.recurrent.forward_block(
                     0, tokens(), torch.randn(1, 4, 12, generator=torch.Generator().manual_seed(0)).to(dtype), 3.0
                 ).logits, torch.float32, torch.float64, guard=True),
    WorkingInput("MaskedLM.forward_block float64 t",
                 lambda m, t: m.masked_lm.forward_block(0, tokens(2, 5), t).logits,
                 torch.tensor([0.7, 0.9]), torch.tensor([0.7, 0.9], dtype=torch.float64), guard=True),
    WorkingInput("DiffusionBlocksScheduler.step float64", scheduler_step, torch.float32, torch.float64, guard=True),
    WorkingInput("DiffusionBlocksScheduler.set_timesteps numpy int",
                 lambda m, steps: (lambda s: (s.set_timesteps(steps), s.sigmas)[1])(m.scheduler()), 6, np.int64(6),
                 atol=0.0, guard=True),
    WorkingInput("ImagePipeline.__call__ class_labels int32 tensor", image_pipeline_images, [3, 7],
                 torch.tensor([3, 7], dtype=torch.int32), atol=0.0, guard=True),
    WorkingInput("ImagePipeline.__call__ class_labels numpy", image_pipeline_images, [3, 7], np.array([3, 7]),
                 atol=0.0, guard=True),
    WorkingInput("ImagePipeline.__call__ guidance_scale numpy float",
                 lambda m, scale: m.image_pipeline([3], guidance_scale=scale, num_inference_steps=3, output_type="pt",
                                                   generator=torch.Generator().manual_seed(0)).images,
                 2.0, np.float32(2.0), atol=0.0, guard=True),
]


@pytest.mark.parametrize("case", WORKING_INPUTS, ids=lambda case: f"{'guard:' if case.guard else ''}{case.label}")
def test_equivalent_inputs_give_the_same_result(case: WorkingInput, models: TinyModels):
    expected, actual = case.call(models, case.reference), case.call(models, case.variant)
    assert not expected.isnan().any()  # (masked-LM logits hold -inf at the carried-over tokens)
    torch.testing.assert_close(actual.double(), expected.double(), atol=case.atol, rtol=case.atol)


def test_nan_is_never_inside_any_range():
    """The shared checks refuse NaN for every kind of bound (a plain `x < low or x > high` lets it through)."""
    from hf_diffusionblocks.argument_checks import check_integer, check_number, check_values_in_range

    for bounds in ({}, {"minimum": 0}, {"maximum": 1}, {"minimum": 0, "maximum": 1}):
        with pytest.raises(ValueError, match="x must be"):
            check_number(math.nan, "x", **bounds)
        with pytest.raises(ValueError, match="x must"):
            check_values_in_range(torch.tensor([0.5, math.nan]), "x", **bounds)
    with pytest.raises(ValueError, match="x must be an integer"):
        check_integer(math.nan, "x", minimum=None)
    assert check_number(np.float64(0.5), "x", 0, 1) == 0.5 and check_integer(np.int32(3), "x") == 3

"""Bits per character of a masked diffusion LM as an `evaluate` metric; the work is done by
`hf_diffusionblocks.evaluation.estimate_nelbo`.

Load it by path (no Hub access):
`evaluate.load(hf_diffusionblocks.evaluation.bits_per_character_metric_path())`.
"""

import datasets
import evaluate
import torch

from hf_diffusionblocks.evaluation import estimate_nelbo
from hf_diffusionblocks.pipelines import DiffusionBlocksTextPipeline

_DESCRIPTION = """\
Bits per character (BPC) of held-out texts under a DiffusionBlocks masked diffusion LM: its NELBO
(an upper bound on the negative log-likelihood) divided by characters·ln 2, with the piecewise
denoiser (each block on its own interval of masking times). The NELBO integral over t is estimated by
a fixed-seed stratified Monte-Carlo (strata aligned with the blocks) with independent replicates, and
its standard error is returned. Lower is better.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the texts to score; each is cut into windows of `sequence_length`.
    model_path (`str`): a pipeline folder written by `examples/train_mdm.py` (transformer/ and tokenizer/).
    sequence_length (`int`, *optional*): window length; defaults to the model's max_position_embeddings.
    num_time_strata (`int`, defaults to 6): strata over t, a multiple of num_blocks.
    num_replicates (`int`, defaults to 2): independent estimates per window (>= 2).
    batch_size (`int`, defaults to 64), seed (`int`, defaults to 0), device (`str`, defaults to "cpu").
Returns:
    bits_per_character (`float`), bits_per_character_standard_error (`float`), bits_per_token (`float`),
    nelbo_nats (`float`), standard_error_nats (`float`), num_characters (`int`), num_tokens (`int`),
    num_sequences (`int`).
Examples:
    >>> metric = evaluate.load(hf_diffusionblocks.evaluation.bits_per_character_metric_path())
    >>> metric.compute(predictions=[held_out_text], model_path="outputs/mdm-shakespeare")
"""

_CITATION = """\
@inproceedings{shi2024simplified,
  title={Simplified and Generalized Masked Diffusion for Discrete Data},
  author={Shi, Jiaxin and Han, Kehang and Wang, Zhe and Doucet, Arnaud and Titsias, Michalis K.},
  booktitle={NeurIPS},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerCharacter(evaluate.Metric):
    """`evaluate` wrapper of `estimate_nelbo`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, model_path=None, sequence_length=None, num_time_strata=6, num_replicates=2,
                 batch_size=64, seed=0, device="cpu"):
        if model_path is None:
            raise ValueError("bits_per_character needs `model_path`, a pipeline folder of a masked diffusion LM.")
        pipeline = DiffusionBlocksTextPipeline.from_pretrained(model_path)
        model = pipeline.transformer.to(torch.device(device))
        totals = {"nelbo_nats": 0.0, "variance": 0.0, "num_characters": 0, "num_tokens": 0, "num_sequences": 0}
        for index, text in enumerate(predictions):
            estimate = estimate_nelbo(model, pipeline.tokenizer, text, sequence_length, num_time_strata,
                                      num_replicates, batch_size, seed + index)
            totals["nelbo_nats"] += estimate.nelbo_nats
            totals["variance"] += estimate.standard_error_nats**2
            for key in ("num_characters", "num_tokens", "num_sequences"):
                totals[key] += getattr(estimate, key)
        denominator = totals["num_characters"] * 0.6931471805599453  # characters · ln 2
        standard_error = totals.pop("variance") ** 0.5
        return {
            "bits_per_character": totals["nelbo_nats"] / denominator,
            "bits_per_character_standard_error": standard_error / denominator,
            "bits_per_token": totals["nelbo_nats"] / (totals["num_tokens"] * 0.6931471805599453),
            "standard_error_nats": standard_error,
            **totals,
        }

"""Fréchet classifier distance as an `evaluate` metric; `hf_diffusionblocks.metrics.frechet` does the work.

Load it by path (no Hub access):
`hf_diffusionblocks.metrics.load_metric("frechet_classifier_distance")`, or
`evaluate.load("/abs/path/to/hf_diffusionblocks/metrics/frechet_classifier_distance")`.
"""

import datasets
import evaluate
import numpy as np

from hf_diffusionblocks.metrics.frechet import FrechetClassifierDistance

_DESCRIPTION = """\
Fréchet distance between the penultimate-layer features of generated and real images, with a
small CNN classifier trained by hf-diffusionblocks on the dataset's training images (an offline
stand-in for FID). Lower is better; 0 means identical feature means and covariances. The
classifier's held-out accuracy is returned too: features of a weak classifier are weak evidence.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated images, shape (N, C, H, W), values in [-1, 1] (array, tensor or nested lists).
    references: real images, same shape (evaluate stores both as columns, so N must match).
    classifier_path (`str`): folder of a trained feature classifier, e.g. the `name_or_path` of
        `hf_diffusionblocks.metrics.load_or_train_feature_classifier(...)`.
    batch_size (`int`, defaults to 256): images per classifier forward pass.
Returns:
    frechet_classifier_distance (`float`): squared Fréchet distance of the two feature sets.
    classifier_accuracy (`float`): held-out accuracy of the classifier.
Examples:
    >>> metric = hf_diffusionblocks.metrics.load_metric("frechet_classifier_distance")
    >>> metric.compute(predictions=generated, references=real, classifier_path=classifier.name_or_path)
"""

_CITATION = """\
@inproceedings{heusel2017gans,
  title={GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium},
  author={Heusel, Martin and Ramsauer, Hubert and Unterthiner, Thomas and Nessler, Bernhard
          and Hochreiter, Sepp},
  booktitle={NeurIPS},
  year={2017}
}
"""

_IMAGE = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))  # one (C, H, W) image


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FrechetClassifierDistanceMetric(evaluate.Metric):
    """`evaluate` wrapper of `FrechetClassifierDistance`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _IMAGE, "references": _IMAGE}),
        )

    def _compute(self, predictions, references, classifier_path=None, batch_size=256):
        if classifier_path is None:
            raise ValueError(
                "frechet_classifier_distance needs `classifier_path`, "
                "the folder of a trained feature classifier."
            )
        metric = FrechetClassifierDistance.from_pretrained(classifier_path, batch_size=batch_size)
        generated = np.asarray(predictions, dtype=np.float32)  # (N, C, H, W) from nested lists
        real = np.asarray(references, dtype=np.float32)
        return {
            "frechet_classifier_distance": metric.compute(real, generated),
            "classifier_accuracy": metric.classifier_accuracy,
        }

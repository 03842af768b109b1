"""Classification accuracy as an `evaluate` module, loadable by path offline (evaluate 0.4.6 ships no metric
and `evaluate.load("accuracy")` needs the Hub):
`evaluate.load(hf_diffusionblocks.models.vit.evaluation_vit.accuracy_metric_path())`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy: the fraction of predictions equal to their reference label, optionally weighted per example.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): true labels, as many as predictions.
    normalize (`bool`, defaults to True): the fraction correct; False gives the (weighted) count.
    sample_weight (`list[float]`, *optional*): a weight per example.
Returns:
    accuracy (`float`).
Examples:
    >>> metric = evaluate.load(accuracy_metric_path())
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Fraction (or weighted count) of exact label matches."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        correct = np.asarray(predictions) == np.asarray(references)
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if len(weights) != len(correct):
            raise ValueError(f"sample_weight must have one weight per prediction ({len(correct)}), got {len(weights)}.")
        total = float(np.sum(weights * correct))
        return {"accuracy": total / float(np.sum(weights)) if normalize else total}

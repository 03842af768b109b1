#!/usr/bin/env bash
# The autoregressive recipe, one option at a time (Shakespeare, BPE 1,024; the model of text_results.sh ar:
# hidden 128, 8 layers, context 64, batch 32, AdamW 1e-3 cosine, B = 4, γ = 0.1). Every block-wise variant trains
# N steps per block and is compared with the end-to-end model at N steps (equal compute, the paper's protocol:
# every block trains as many iterations as the end-to-end model) and at 4N steps (equal total steps).
# Every block-wise model is evaluated twice per decoding: with Euler steps on the posterior mean (the paper) and
# with ancestral steps (a token drawn from each readout, re-noised), one Euler/ancestral step per block:
#   - examples/evaluate_ar.py: MAUVE (5 k-means seeds), generative perplexity under the N-step end-to-end model,
#     distinct-n and repetition, on NUM_PROMPTS prompts of 8 words from the held-out plays, 15-word continuations;
#   - benchmarks/ar_diagnosis.py: teacher-forced accuracy / cross-entropy of every block and of the chain.
# A model already trained (samples.txt present) or evaluated (<name>.eval.json present) is not redone. The last
# output is the table of docs/results/causal_lm.md (benchmarks/ar_ablations_table.py) over every model evaluated so far.
#
# Usage: bash benchmarks/ar_ablations.sh [N] [VARIANTS]
#   VARIANTS: a comma list of blockwise (the paper's recipe), clean_loss_1 (--clean_loss_weight 1), clean_loss_4,
#   semantic (--target_embeddings_from the N-step end-to-end model), two_blocks (B = 2), three_blocks (B = 3, layers 3/3/2),
#   high_noise_batch_x2 (--train_batch_size_per_block 64 32 32 32), layers_4_2_1_1 (--layers_per_block 4 2 1 1: the
#   noisiest block gets half the layers), combined (clean_loss_1 + semantic + layers_4_2_1_1), combined_steps16 (the
#   combined model evaluated with 16 steps per token, greedy), end_to_end_equal_total (4N steps);
#   default: all; none: only the end-to-end model. The N-step end-to-end model is always trained (it is the judge and the reference).
# Environment: OUTPUT_ROOT (default outputs), PYTHON, NUM_PROMPTS (default 512), SEED (default 0), DATASET (default
#   shakespeare; jargon: the Jargon File).
set -euo pipefail
steps=${1:-1000}
variants=${2:-blockwise,clean_loss_1,clean_loss_4,semantic,two_blocks,three_blocks,high_noise_batch_x2,layers_4_2_1_1,combined,combined_steps16,end_to_end_equal_total}
root=${OUTPUT_ROOT:-outputs}
python=${PYTHON:-python}
prompts=${NUM_PROMPTS:-512}
seed=${SEED:-0}
dataset=${DATASET:-shakespeare}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$root"
common=(--dataset_name "$dataset" --tokenizer bpe --vocab_size 1024 --hidden_size 128 --num_hidden_layers 8
        --num_attention_heads 4 --sequence_length 64 --train_batch_size 32 --learning_rate 1e-3 --lr_scheduler cosine
        --lr_warmup_steps 100 --checkpointing_steps 250 --logging_steps 100 --validation_steps 500 --seed "$seed"
        --report_to none --clean_loss_weight 0 --solver euler)   # the paper's recipe; a variant's flags come after and win
e2e="$root/ar-end_to_end"
train() {  # name, flags...
  local name=$1; shift
  local out="$root/ar-$name"
  if [[ -f "$out/samples.txt" ]]; then echo "== $name: already trained ($out)"; return; fi
  echo "== $(date +%T) train $name"
  local started=$SECONDS
  # a run stopped midway continues: finished blocks are kept, the others resume from their checkpoints
  "$python" examples/train_ar.py "${common[@]}" --output_dir "$out" --resume_from_checkpoint latest "$@" >> "$out.log" 2>&1
  echo "== $name trained in $((SECONDS - started)) s"
}
evaluate() {  # name, evaluate_ar flags...
  local name=$1; shift
  local out="$root/ar-$name"
  if [[ ! -s "$out.eval.json" ]]; then
    echo "== $(date +%T) evaluate $name"
    "$python" examples/evaluate_ar.py --model "$name=$out" --judge "$e2e" --dataset_name "$dataset" --split test \
      --num_samples "$prompts" --prompt_words 8 --continuation_words 15 --decoding greedy sample --mauve_seeds 5 \
      --seed "$seed" --output_file "$out.eval.json" "$@" 2> "$out.eval.log" > "$out.eval.txt"
  fi
  cat "$out.eval.txt"
}
diagnose() {  # name
  local name=$1 out="$root/ar-$1"
  for solver in euler ancestral; do
    if [[ ! -s "$out.diagnosis-$solver.txt" ]]; then
      "$python" benchmarks/ar_diagnosis.py --blockwise_dir "$out" --end_to_end_dir "$e2e" --dataset "$dataset" \
        --split validation --num_windows 256 --solver "$solver" --seed "$seed" \
        --output_json "$out.diagnosis-$solver.json" > "$out.diagnosis-$solver.txt" 2> "$out.diagnosis-$solver.log"
    fi
    cat "$out.diagnosis-$solver.txt"
  done
}
blockwise_variant() {  # name, training flags...
  local name=$1; shift
  train "$name" --max_train_steps "$steps" "$@"
  evaluate "$name" --solver euler ancestral
  diagnose "$name"
}

train end_to_end --training_mode end_to_end --max_train_steps "$steps"
evaluate end_to_end
IFS=, read -r -a selected <<< "$variants"
for variant in "${selected[@]}"; do
  case $variant in
  blockwise) blockwise_variant blockwise --num_blocks 4 ;;
  clean_loss_1) blockwise_variant clean_loss_1 --num_blocks 4 --clean_loss_weight 1 ;;
  clean_loss_4) blockwise_variant clean_loss_4 --num_blocks 4 --clean_loss_weight 4 ;;
  semantic) blockwise_variant semantic --num_blocks 4 --target_embeddings_from "$e2e" ;;
  two_blocks) blockwise_variant two_blocks --num_blocks 2 ;;
  three_blocks) blockwise_variant three_blocks --num_blocks 3 --layers_per_block 3 3 2 ;;
  high_noise_batch_x2) blockwise_variant high_noise_batch_x2 --num_blocks 4 --train_batch_size_per_block 64 32 32 32 ;;
  layers_4_2_1_1) blockwise_variant layers_4_2_1_1 --num_blocks 4 --layers_per_block 4 2 1 1 ;;
  combined) blockwise_variant combined --num_blocks 4 --clean_loss_weight 1 --target_embeddings_from "$e2e" \
              --layers_per_block 4 2 1 1 ;;
  combined_steps16)
    blockwise_variant combined --num_blocks 4 --clean_loss_weight 1 --target_embeddings_from "$e2e" --layers_per_block 4 2 1 1
    if [[ ! -s "$root/ar-combined_steps16.eval.json" ]]; then
      echo "== $(date +%T) evaluate combined with 16 steps per token"
      "$python" examples/evaluate_ar.py --model "combined_steps16=$root/ar-combined" --judge "$e2e" --dataset_name "$dataset" \
        --split test --num_samples "$prompts" --prompt_words 8 --continuation_words 15 --decoding greedy --mauve_seeds 5 \
        --seed "$seed" --num_inference_steps 16 --solver euler ancestral --output_file "$root/ar-combined_steps16.eval.json" \
        2> "$root/ar-combined_steps16.eval.log" > "$root/ar-combined_steps16.eval.txt"
    fi
    cat "$root/ar-combined_steps16.eval.txt" ;;
  end_to_end_equal_total)
    train end_to_end_equal_total --training_mode end_to_end --max_train_steps $((4 * steps))
    evaluate end_to_end_equal_total ;;
  none) ;;
  *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
done
echo "== $(date +%T) done; the table of every model evaluated in $root:"
"$python" benchmarks/ar_ablations_table.py "$root"

#!/usr/bin/env bash
# The DiT results table on digits (docs/results/dit.md) (CPU): block-wise B=3 with the equi-probability and the
# two uniform partitions, and end to end at the same total number of training steps, each
# evaluated with examples/evaluate_dit.py. Usage: bash benchmarks/digits_results.sh [STEPS_PER_BLOCK]
set -euo pipefail
steps=${1:-1000}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1
run() {  # name, flags...
  local name=$1; shift
  echo "== $(date +%T) train $name"
  python examples/train_dit.py --dataset_name digits --overwrite_output_dir --output_dir "outputs/digits-$name" --report_to tensorboard "$@" > "outputs/digits-$name.log" 2>&1
  echo "== $(date +%T) evaluate $name"
  python examples/evaluate_dit.py --pipeline "outputs/digits-$name" --dataset_name digits --samples_per_class 100 2>/dev/null \
    | grep -E '"(frechet_classifier_distance|seconds_per_image|layer_evaluations_per_image|num_generated)"'
}
run blockwise-equiprobable --num_blocks 3 --partition equiprobable --max_train_steps "$steps"
run end-to-end --training_mode end_to_end --max_train_steps $((3 * steps))
run blockwise-uniform-log --num_blocks 3 --partition uniform_log --max_train_steps "$steps"
run blockwise-uniform-linear --num_blocks 3 --partition uniform_linear --max_train_steps "$steps"
echo "== $(date +%T) done"

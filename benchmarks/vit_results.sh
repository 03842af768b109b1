#!/usr/bin/env bash
# The ViT table on Fashion-MNIST (docs/results/vit.md): block-wise B=3 and end to end, N steps each (equal compute:
# a block step runs L/B of the L layers), then examples/evaluate_vit.py on the 10k test images.
# Needs Fashion-MNIST (`sudo apt-get install dataset-fashion-mnist`). Usage: [SEED=s] bash benchmarks/vit_results.sh [N]
set -euo pipefail
steps=${1:-1000}
out=${OUT:-outputs/vit-results-$steps-seed${SEED:-0}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 TQDM_DISABLE=1
mkdir -p "$out"
common=(--dataset_name fashion_mnist --overwrite_output_dir --model_size XS --patch_size 4 --train_batch_size 128 --learning_rate 1e-3
        --lr_warmup_steps 50 --checkpointing_steps 250 --logging_steps 100 --eval_batch_size 1000 --seed "${SEED:-0}"
        --max_train_steps "$steps")
echo "== $(date +%T) train block-wise"
python examples/train_vit.py "${common[@]}" --output_dir "$out/blockwise" > "$out/blockwise.log" 2>&1
echo "== $(date +%T) train end to end"
python examples/train_vit.py "${common[@]}" --training_mode end_to_end --output_dir "$out/end_to_end" > "$out/end_to_end.log" 2>&1
echo "== $(date +%T) evaluate"
python examples/evaluate_vit.py --model blockwise="$out/blockwise" --model end_to_end="$out/end_to_end" \
  --dataset_name fashion_mnist --num_inference_steps 1 3 6 --noise_seeds 0 --output_file "$out/accuracy.json" 2>/dev/null

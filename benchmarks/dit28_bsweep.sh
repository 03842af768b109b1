#!/usr/bin/env bash
# The paper's B-sweep in the regime where the method is meant to work: a DiT with 12 layers (hidden 192,
# 3 heads, patch 4) on Fashion-MNIST 28×28, so B = 2, 3, 4 give 6 / 4 / 3 layers per block.
#
# Rows (N = STEPS_PER_BLOCK):
#   end-to-end-N-seed<s>          end to end, N steps                 (the paper's protocol: equal compute)
#   blockwise-B<b>-seed<s>        B = b equi-probability blocks, N steps each
#   end-to-end-<b>N               end to end, b·N steps               (equal total steps, one seed)
#   blockwise-B3-layers-6-3-3     B = 3, the high-noise block gets half the layers, N steps each
#   blockwise-B3-steps-2-1-1      B = 3, equal layers, 2N / N / N steps
# The headline rows (end to end at N and block-wise at N for each B in HEADLINE_BLOCKS) are trained once per seed
# in SEEDS; the other rows once, with the first seed.
# Every model is evaluated by examples/evaluate_dit.py: the standard FID (Inception-v3 2015-12-05 pool3,
# FID_SAMPLES generated images against as many test images, 48 Euler steps, CFG 2; FID is biased upward
# at small N, so compare only at equal FID_SAMPLES), the library's feature-classifier distance as a second
# column, and the EDM-weighted denoising loss on LOSS_IMAGES test images split over the row's own B
# equi-probability σ intervals, minus the same-seed end-to-end model's on the same draws (paired), so the
# table shows in which interval a block-wise model gains or loses.
#
# Each row is evaluated as soon as it is trained, so a sweep stopped early still has its first rows scored.
# Resumable: a trained model (samples.png present) or an evaluated one (<name>.eval.txt present) is not
# redone, and a run stopped midway continues from its checkpoints; delete a folder to start it over.
# Needs the `fid` extra and the Fashion-MNIST data (`apt-get install dataset-fashion-mnist`). The defaults
# are the run the issue asks for; on a 2-core CPU a 12-layer step takes seconds, so run it on a GPU
# (DEVICE=cuda) or shrink it (e.g. `bash benchmarks/dit28_bsweep.sh 20 16 "0"` takes minutes).
#
# Usage: bash benchmarks/dit28_bsweep.sh [STEPS_PER_BLOCK] [BATCH] [SEEDS]
# Environment: OUTPUT_ROOT (outputs), PYTHON, DATASET (fashion_mnist), FID_SAMPLES (2000),
#   SAMPLES_PER_CLASS (unset: the classifier distance reuses the FID's images; N: N per class, sampled apart),
#   LOSS_IMAGES (1000), DEVICE (cpu), HIDDEN (192), LAYERS (12), HEADS (3), PATCH (4).
#   Which rows: BLOCKS (2 3 4: the B of the first seed's rows), HEADLINE_BLOCKS (the B trained for every seed;
#   default BLOCKS), EQUAL_TOTAL_BLOCKS (2 3 4: the b of the end-to-end-<b>N rows; empty for none),
#   ALLOCATION_ROWS (1: the two uneven B = 3 rows; 0 for none).
set -euo pipefail
steps=${1:-1500}
batch=${2:-64}
seeds=${3:-0 1}
root=${OUTPUT_ROOT:-outputs}
python=${PYTHON:-python}
dataset=${DATASET:-fashion_mnist}
device=${DEVICE:-cpu}
layers=${LAYERS:-12}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1
mkdir -p "$root"
model=(--dataset_name "$dataset" --num_hidden_layers "$layers" --hidden_size "${HIDDEN:-192}"
       --num_attention_heads "${HEADS:-3}" --patch_size "${PATCH:-4}" --train_batch_size "$batch"
       --report_to none --checkpointing_steps 500 --samples_per_class 8)

blocks_first=${BLOCKS:-2 3 4}
blocks_headline=${HEADLINE_BLOCKS:-$blocks_first}
equal_total=${EQUAL_TOTAL_BLOCKS-2 3 4}
frechet=(--fid --fid_num_samples "${FID_SAMPLES:-2000}")
if [[ -n "${SAMPLES_PER_CLASS:-}" ]]; then frechet+=(--samples_per_class "$SAMPLES_PER_CLASS"); fi
rows=()  # names, in the table's order

row() {  # name, seed, blocks of the loss split, reference folder (or ""), training flags...: train, then evaluate
  local name=$1 seed=$2 blocks=$3 reference=$4; shift 4
  local out="$root/bsweep-$name"
  rows+=("$name")
  if [[ -f "$out/samples.png" ]]; then
    echo "== $name: already trained ($out)"
  else
    echo "== $(date +%T) train $name"
    local started=$SECONDS
    "$python" examples/train_dit.py "${model[@]}" --seed "$seed" --output_dir "$out" --resume_from_checkpoint latest "$@" \
      >> "$out.log" 2>&1
    echo "== $name trained in $((SECONDS - started)) s"
  fi
  if [[ -s "$out.eval.txt" ]]; then return; fi
  echo "== $(date +%T) evaluate $name"
  local started=$SECONDS compare=()
  if [[ -n "$reference" && "$reference" != "$out" ]]; then compare=(--denoising_loss_reference "$reference"); fi
  "$python" examples/evaluate_dit.py --pipeline "$out" --dataset_name "$dataset" --device "$device" --seed "$seed" \
    "${frechet[@]}" --batch_size 250 \
    --denoising_loss_blocks "$blocks" --denoising_loss_partition equiprobable --denoising_loss_images "${LOSS_IMAGES:-1000}" \
    "${compare[@]}" 2>/dev/null > "$out.eval.tmp"
  mv "$out.eval.tmp" "$out.eval.txt"
  echo "== $name evaluated in $((SECONDS - started)) s"
}

first_seed=${seeds%% *}
for seed in $seeds; do
  reference="$root/bsweep-end-to-end-N-seed$seed"
  row "end-to-end-N-seed$seed" "$seed" 3 "" --training_mode end_to_end --max_train_steps "$steps"
  for blocks in $([[ "$seed" == "$first_seed" ]] && echo "$blocks_first" || echo "$blocks_headline"); do
    row "blockwise-B$blocks-seed$seed" "$seed" "$blocks" "$reference" --num_blocks "$blocks" --partition equiprobable \
      --max_train_steps "$steps"
  done
done
reference="$root/bsweep-end-to-end-N-seed$first_seed"
for blocks in $equal_total; do
  row "end-to-end-${blocks}N" "$first_seed" "$blocks" "$reference" --training_mode end_to_end --max_train_steps $((blocks * steps))
done
if [[ "${ALLOCATION_ROWS:-1}" == 1 ]]; then
  row blockwise-B3-layers-6-3-3 "$first_seed" 3 "$reference" --num_blocks 3 --partition equiprobable --max_train_steps "$steps" \
    --layers_per_block $((layers / 2)) $((layers / 4)) $((layers - layers / 2 - layers / 4))
  row blockwise-B3-steps-2-1-1 "$first_seed" 3 "$reference" --num_blocks 3 --partition equiprobable \
    --max_train_steps_per_block $((2 * steps)) "$steps" "$steps"
fi

echo "== table (N = $steps steps per block, $layers layers, batch $batch, seeds: $seeds)"
"$python" - "$root" "${rows[@]}" <<'PY'
import json, sys
root, names = sys.argv[1], sys.argv[2:]
print("| model | training steps | FID | FD (feature classifier) | loss by σ interval, minus end to end (high → low) |")
print("|---|---|---|---|---|")
for name in names:
    metrics = json.load(open(f"{root}/bsweep-{name}/metrics.json"))
    steps = "+".join(str(s) for s in metrics["training_steps"].values())
    difference = metrics.get("denoising_loss_difference")
    cells = "—" if difference is None else " / ".join(
        f"{row['conditional_loss']:+.4f} ± {row['conditional_standard_error']:.4f}" for row in difference["intervals"])
    print(f"| {name} | {steps} | {metrics['fid']:.2f} | {metrics['frechet_classifier_distance']:.2f} | {cells} |")
first = json.load(open(f"{root}/bsweep-{names[0]}/metrics.json"))
print(f"FID: {first['fid_num_samples']} generated vs as many test images; {first['num_inference_steps']} Euler steps, "
      f"CFG {first['guidance_scale']}. Loss: {first['denoising_loss']['num_images']} test images.")
PY
echo "== $(date +%T) done"

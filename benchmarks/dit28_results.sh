#!/usr/bin/env bash
# DiT at 28×28 on Fashion-MNIST (CPU): block-wise B=3 (equi-probability) with N steps per block
# against end to end at N steps (equal compute, the paper's protocol: every block trains as many
# iterations as the end-to-end model) and at 3N steps (equal total steps). Every model is evaluated
# by examples/evaluate_dit.py: the Fréchet distance on the library's Fashion-MNIST feature classifier
# (SAMPLES_PER_CLASS × 10 generated images, 48 Euler steps, CFG 2, against the 10,000 test images),
# and the EDM-weighted denoising loss on the first LOSS_IMAGES test images split over the three
# equi-probability σ intervals (the same σ draws and noise for every model), so the table shows in
# which interval a model loses; every other model's loss is also given minus the equal-compute
# end-to-end model's, per interval, with paired standard errors. Each model's folder holds samples.png (8 per class, one column per
# class), metrics.json and the training log; a model already trained (samples.png present) or
# already evaluated (<name>.eval.txt present) is not redone, so delete the folder to start over.
#
# Usage: bash benchmarks/dit28_results.sh [STEPS_PER_BLOCK] [MODEL_SIZE] [BATCH] [SAMPLES_PER_CLASS] [PATCH] [ABLATIONS]
#   ABLATIONS: "none" or a comma list of uniform_log (B=3, uniform in ln σ), two_blocks (B=2), and steps given to the
#   blocks unevenly (B=3, equi-probability): high_noise_x2 (2N, N, N), low_noise_x2 (N, N, 2N), equal_total_high
#   (3N/2, 3N/4, 3N/4: the end-to-end model's 3N steps in total, half of them on the high-noise block); and the block
#   overlap: overlap_0 (γ = 0), overlap_0.2 (γ = 0.2); default: all seven.
# Defaults are the run reported (CPU, about 1.5 h on 2 shared cores).
# Environment: OUTPUT_ROOT (default outputs), PYTHON, CLASSIFIER_TRAIN_SIZE (default 10000), LOSS_IMAGES (default 1000),
#   SEED (default 0), FID_SAMPLES (default unset: no FID; a count N adds the standard FID, Inception-v3 pool3, of N generated
#   images drawn with the first N test labels against the first N test images, same 48 steps and CFG 2; a model evaluated
#   before without FID at that N is evaluated again; FID is biased upward at small N: compare only at equal N).
set -euo pipefail
steps=${1:-1000}
size=${2:-XS}
batch=${3:-64}
samples_per_class=${4:-50}
patch=${5:-4}
ablations=${6:-uniform_log,two_blocks,high_noise_x2,low_noise_x2,equal_total_high,overlap_0,overlap_0.2}
seed=${SEED:-0}
root=${OUTPUT_ROOT:-outputs}
python=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
mkdir -p "$root"
common=(--dataset_name fashion_mnist --model_size "$size" --patch_size "$patch" --train_batch_size "$batch"
        --seed "$seed" --report_to none --checkpointing_steps 1000000 --samples_per_class 8)
train() {  # name, flags...
  local name=$1; shift
  local out="$root/fmnist28-$name"
  if [[ -f "$out/samples.png" ]]; then echo "== $name: already trained ($out)"; return; fi
  echo "== $(date +%T) train $name"
  local started=$SECONDS
  # a run stopped midway continues: finished blocks are kept, the others resume from their checkpoints
  "$python" examples/train_dit.py "${common[@]}" --output_dir "$out" --resume_from_checkpoint latest "$@" >> "$out.log" 2>&1
  echo "== $name trained in $((SECONDS - started)) s"
}
train_steps_per_block() {  # steps of block 0, 1, 2
  local name="blockwise-steps-$1-$2-$3"
  train "$name" --num_blocks 3 --partition equiprobable --max_train_steps_per_block "$@"
  names+=("$name")
}
fid_flags=()
if [[ -n "${FID_SAMPLES:-}" ]]; then fid_flags=(--fid --fid_num_samples "$FID_SAMPLES"); fi
evaluate() {  # name: Fréchet distance (and FID with FID_SAMPLES) and the loss by interval
  local name=$1 out="$root/fmnist28-$1"
  if [[ ! -s "$out.eval.txt" ]] || { [[ -n "${FID_SAMPLES:-}" ]] && ! grep -qE "\"fid_num_samples\": $FID_SAMPLES(,|\$)" "$out.eval.txt"; }; then
    echo "== $(date +%T) evaluate $name"
    local started=$SECONDS
    "$python" examples/evaluate_dit.py --pipeline "$out" --dataset_name fashion_mnist --samples_per_class "$samples_per_class" \
      --classifier_train_size "${CLASSIFIER_TRAIN_SIZE:-10000}" --seed "$seed" --batch_size 250 \
      --denoising_loss_blocks 3 --denoising_loss_partition equiprobable --denoising_loss_images "${LOSS_IMAGES:-1000}" \
      "${fid_flags[@]}" 2>/dev/null > "$out.eval.tmp"
    mv "$out.eval.tmp" "$out.eval.txt"
    echo "== $name evaluated in $((SECONDS - started)) s"
  fi
  sed -n '/^denoising loss by/,$p' "$out.eval.txt"
}
reference="$root/fmnist28-end-to-end-equal-compute"
compare() {  # name: the loss by interval minus the equal-compute end-to-end model's, on the same draws
  local name=$1 out="$root/fmnist28-$1"
  if [[ ! -s "$out.difference.json" ]]; then
    "$python" examples/evaluate_dit.py --pipeline "$out" --dataset_name fashion_mnist --skip_frechet --seed "$seed" --batch_size 250 \
      --denoising_loss_blocks 3 --denoising_loss_partition equiprobable --denoising_loss_images "${LOSS_IMAGES:-1000}" \
      --denoising_loss_reference "$reference" --denoising_loss_json "$out.difference.tmp" 2>/dev/null > /dev/null
    mv "$out.difference.tmp" "$out.difference.json"
  fi
}
names=(blockwise-equiprobable end-to-end-equal-compute end-to-end-equal-steps)
train blockwise-equiprobable --num_blocks 3 --partition equiprobable --max_train_steps "$steps"
train end-to-end-equal-compute --training_mode end_to_end --max_train_steps "$steps"
train end-to-end-equal-steps --training_mode end_to_end --max_train_steps $((3 * steps))
if [[ ",$ablations," == *",uniform_log,"* ]]; then
  train blockwise-uniform-log --num_blocks 3 --partition uniform_log --max_train_steps "$steps"; names+=(blockwise-uniform-log)
fi
if [[ ",$ablations," == *",two_blocks,"* ]]; then
  train blockwise-two-blocks --num_blocks 2 --partition equiprobable --max_train_steps "$steps"; names+=(blockwise-two-blocks)
fi
if [[ ",$ablations," == *",high_noise_x2,"* ]]; then train_steps_per_block $((2 * steps)) "$steps" "$steps"; fi
if [[ ",$ablations," == *",low_noise_x2,"* ]]; then train_steps_per_block "$steps" "$steps" $((2 * steps)); fi
if [[ ",$ablations," == *",equal_total_high,"* ]]; then train_steps_per_block $((3 * steps / 2)) $((3 * steps / 4)) $((3 * steps / 4)); fi
for gamma in 0 0.2; do
  if [[ ",$ablations," == *",overlap_$gamma,"* ]]; then
    train "blockwise-overlap-$gamma" --num_blocks 3 --partition equiprobable --overlap "$gamma" --max_train_steps "$steps"
    names+=("blockwise-overlap-$gamma")
  fi
done
for name in "${names[@]}"; do echo "-- $name"; evaluate "$name"; done
for name in "${names[@]:0:1}" "${names[@]:2}"; do echo "-- $name minus end-to-end-equal-compute"; compare "$name"; done
echo "== table (N=$steps steps per block, DiT-$size, patch $patch, batch $batch, seed $seed)"
"$python" - "$root" "${names[@]}" <<'PY'
import json, sys
root, names = sys.argv[1], sys.argv[2:]
metrics = {name: json.load(open(f"{root}/fmnist28-{name}/metrics.json")) for name in names}
fid = all("fid" in m for m in metrics.values())  # the FID column only when every model has one (FID_SAMPLES)
print("| model | training steps | FD (feature classifier) |" + (" FID (Inception) |" if fid else "")
      + " loss σ-interval 0 (high) | 1 | 2 (low) | total loss |")
print("|---|---|---|" + ("---|" if fid else "") + "---|---|---|---|")
for name in names:
    loss = metrics[name]["denoising_loss"]
    cells = [f"{row['conditional_loss']:.4f} ± {row['conditional_standard_error']:.4f}" for row in loss["intervals"]]
    steps = "+".join(str(s) for s in metrics[name]["training_steps"].values())
    fid_cell = f" {metrics[name]['fid']:.2f} (N = {metrics[name]['fid_num_samples']}) |" if fid else ""
    print(f"| {name} | {steps} | {metrics[name]['frechet_classifier_distance']:.2f} |{fid_cell} {' | '.join(cells)} | "
          f"{loss['loss']:.4f} ± {loss['standard_error']:.4f} |")
print()
print("| model minus end-to-end-equal-compute (paired) | loss σ-interval 0 (high) | 1 | 2 (low) | total loss |")
print("|---|---|---|---|---|")
for name in names:
    if name != "end-to-end-equal-compute":
        difference = json.load(open(f"{root}/fmnist28-{name}.difference.json"))["denoising_loss_difference"]
        cells = [f"{row['conditional_loss']:+.4f} ± {row['conditional_standard_error']:.4f}" for row in difference["intervals"]]
        print(f"| {name} | {' | '.join(cells)} | {difference['loss']:+.4f} ± {difference['standard_error']:.4f} |")
first = json.load(open(f"{root}/fmnist28-{names[0]}/metrics.json"))
print(f"FD: {first['num_generated']} generated vs {first['num_reference']} test images, {first['num_inference_steps']} steps, "
      f"CFG {first['guidance_scale']}, classifier trained on {first['classifier_train_size']} images "
      f"(held-out accuracy {first['classifier_accuracy']:.3f}); loss: {first['denoising_loss']['num_images']} test images, "
      f"{first['denoising_loss']['strata_per_interval']} strata × {first['denoising_loss']['num_replicates']} replicates per interval.")
PY
# The floor of the metric at this sample size: real training images (as many as were generated) against the test images.
"$python" - "$samples_per_class" "${CLASSIFIER_TRAIN_SIZE:-10000}" "$seed" <<'PY'
import sys, torch
from hf_diffusionblocks.data import load_image_dataset
from hf_diffusionblocks.metrics import FeatureClassifierTrainingArguments, FrechetClassifierDistance, load_or_train_feature_classifier
samples_per_class, size, seed = (int(value) for value in sys.argv[1:])
train, test = load_image_dataset("fashion_mnist", "train"), load_image_dataset("fashion_mnist", "test")
classifier = load_or_train_feature_classifier(train.images[:size], train.labels[:size], train.num_labels,
                                              FeatureClassifierTrainingArguments(num_threads=1))
generator = torch.Generator().manual_seed(seed)
chosen = torch.cat([torch.nonzero(train.labels == label).flatten()[torch.randperm(int((train.labels == label).sum()), generator=generator)[:samples_per_class]]
                    for label in range(train.num_labels)])
distance = FrechetClassifierDistance(classifier).compute(test.images, train.images[chosen])
print(f"real data: {len(chosen)} training images ({samples_per_class} per class, seed {seed}) vs the test images: FD {distance:.2f}")
PY
echo "== $(date +%T) done"

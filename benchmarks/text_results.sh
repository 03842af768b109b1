#!/usr/bin/env bash
# The text tables on the embedded Shakespeare corpus (docs/results/masked_lm.md, causal_lm.md).
#   mdm: block-wise B=3, N steps per block, vs end to end with 3N steps (the same total number of steps)
#        and with N steps (the same compute); held-out BPC with examples/evaluate_mdm.py (first 64,000
#        test characters) and xz -9.
#   ar:  block-wise B=4 vs end to end, N steps each (equal compute: a block step runs L/B layers), the paper's recipe
#        (Euler steps, no auxiliary loss; benchmarks/ar_ablations.sh measures the options);
#        MAUVE / generative perplexity / distinct-n with examples/evaluate_ar.py (512 continuations), and the
#        block-wise model again with 16 and 64 Euler steps per token.
# Usage: bash benchmarks/text_results.sh {mdm|ar} [N]      (MAUVE needs pip install -e ".[metrics]")
#   EXTRA_FLAGS="--train_batch_size 128 ..." is appended to every training command (the last flag wins), e.g. for a
#   larger batch on a GPU; OUT=folder sets where the runs go.
set -euo pipefail
family=${1:?"usage: text_results.sh {mdm|ar} [N]"}
steps=${2:-1000}
read -r -a extra <<< "${EXTRA_FLAGS:-}"
out=${OUT:-outputs/$family-results-$steps}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$out"
case $family in
mdm)
  common=(--dataset_name shakespeare --overwrite_output_dir --hidden_size 128 --num_hidden_layers 6 --num_attention_heads 4 --sequence_length 128
          --train_batch_size 16 --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 100 --checkpointing_steps 250
          --logging_steps 100 --validation_steps 500 --num_inference_steps 128 --num_samples 3 --seed 0 "${extra[@]}")
  echo "== $(date +%T) train block-wise"
  python examples/train_mdm.py "${common[@]}" --num_blocks 3 --max_train_steps "$steps" --output_dir "$out/blockwise" > "$out/blockwise.log" 2>&1
  echo "== $(date +%T) train end to end"
  python examples/train_mdm.py "${common[@]}" --training_mode end_to_end --max_train_steps $((3 * steps)) \
    --output_dir "$out/end_to_end" > "$out/end_to_end.log" 2>&1
  echo "== $(date +%T) train end to end, same compute"
  python examples/train_mdm.py "${common[@]}" --training_mode end_to_end --max_train_steps "$steps" \
    --output_dir "$out/end_to_end_same_compute" > "$out/end_to_end_same_compute.log" 2>&1
  for run in blockwise end_to_end end_to_end_same_compute; do
    echo "== $(date +%T) evaluate $run"
    python examples/evaluate_mdm.py --model_path "$out/$run" --dataset_name shakespeare --split test --batch_size 128 \
      --max_characters 64000 --output_file "$out/$run.eval.json" > "$out/$run.eval.log" 2>&1
    python - "$out/$run.eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
by_t = "  ".join(f"[{s['t_low']:.2f},{s['t_high']:.2f}] {s['bits_per_character']:.3f}" for s in r["strata"])
print(f"BPC {r['bits_per_character']:.4f} ± {r['bits_per_character_standard_error']:.4f} (xz -9 {r['xz_bits_per_character']:.4f}); by t: {by_t}")
PY
  done ;;
ar)
  common=(--dataset_name shakespeare --overwrite_output_dir --tokenizer bpe --vocab_size 1024 --hidden_size 128 --num_hidden_layers 8 --num_attention_heads 4
          --sequence_length 64 --train_batch_size 32 --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 100
          --checkpointing_steps 250 --logging_steps 100 --validation_steps 500 --seed 0 --max_train_steps "$steps"
          --clean_loss_weight 0 --solver euler "${extra[@]}")   # the paper's recipe (benchmarks/ar_ablations.sh: the options)
  echo "== $(date +%T) train block-wise"
  python examples/train_ar.py "${common[@]}" --num_blocks 4 --output_dir "$out/blockwise" > "$out/blockwise.log" 2>&1
  echo "== $(date +%T) train end to end"
  python examples/train_ar.py "${common[@]}" --training_mode end_to_end --output_dir "$out/end_to_end" > "$out/end_to_end.log" 2>&1
  echo "== $(date +%T) evaluate"
  python examples/evaluate_ar.py --model blockwise_B4="$out/blockwise" --model end_to_end="$out/end_to_end" \
    --judge "$out/end_to_end" --dataset_name shakespeare --split test --num_samples 512 --prompt_words 8 \
    --continuation_words 15 --decoding greedy sample --mauve_seeds 5 --output_file "$out/sample_quality.json" 2>/dev/null
  for per_token in 16 64; do   # more Euler steps per token for the block-wise model (default: one per block)
    echo "== $(date +%T) evaluate block-wise with $per_token steps per token"
    python examples/evaluate_ar.py --model blockwise_B4_steps$per_token="$out/blockwise" --judge "$out/end_to_end" \
      --dataset_name shakespeare --split test --num_samples 512 --prompt_words 8 --continuation_words 15 --decoding sample \
      --mauve_seeds 5 --num_inference_steps "$per_token" --output_file "$out/sample_quality_steps$per_token.json" 2>/dev/null
  done ;;
*) echo "unknown family $family (mdm or ar)" >&2; exit 2 ;;
esac
echo "== $(date +%T) done"

#!/usr/bin/env bash
# QLoRA fine-tuning, the main job.
#
#   bash run.sh                      # GPUs: Mistral-7B on glaive over all visible GPUs
#                                    # no GPU and no MODEL_PATH: the tiny-model demo (a few minutes)
#   MODEL_PATH=... DATA_PATH=... bash run.sh --max_steps 100   # extra arguments go to train.py
#
# Every variable below can be set from the environment (the demo also reads TINY_DIR, DEMO_DIR and
# DEMO_MIN_ACCURACY, the held-out call-name accuracy below which it exits 1).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python}
MODEL_PATH=${MODEL_PATH:-}
DATA_PATH=${DATA_PATH:-glaiveai/glaive-function-calling-v2}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/qlora}
LOG_DIR=${LOG_DIR:-logs}
MAX_LENGTH=${MAX_LENGTH:-4096}
NUM_GPUS=${NUM_GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}

mkdir -p "$LOG_DIR"
stamp=$(date +%Y%m%d-%H%M%S)

if [ "$NUM_GPUS" -gt 0 ]; then
    MODEL_PATH=${MODEL_PATH:-mistralai/Mistral-7B-v0.1}
    log="$LOG_DIR/train-$stamp.log"
    echo "QLoRA on $NUM_GPUS GPU(s): $MODEL_PATH, $DATA_PATH -> $OUTPUT_DIR (log: $log)"
    torchrun --standalone --nproc_per_node="$NUM_GPUS" train.py \
        --model_path "$MODEL_PATH" --data_path "$DATA_PATH" --output_dir "$OUTPUT_DIR" \
        --max_length "$MAX_LENGTH" "$@" 2>&1 | tee -i "$log"
elif [ -n "$MODEL_PATH" ]; then
    log="$LOG_DIR/train-$stamp.log"
    echo "QLoRA on the CPU: $MODEL_PATH, $DATA_PATH -> $OUTPUT_DIR (log: $log)"
    "$PYTHON" train.py --model_path "$MODEL_PATH" --data_path "$DATA_PATH" --output_dir "$OUTPUT_DIR" \
        --max_length "$MAX_LENGTH" "$@" 2>&1 | tee -i "$log"
else
    # The demo: no GPU, no model given. Build the tiny Mistral, QLoRA-train it on the shipped
    # sample data, then check on held-out prompts that it learnt to call the right function.
    # The recipe is configs/demo_qlora.yaml; the compute dtype is fp32 on every CPU (the tiny model
    # is too narrow for bf16 to pay: fcmistral/hardware.py), so a run is deterministic and the
    # same on 1 or 2 threads. Figures: docs/training.md.
    # Each demo run gets its own folder (a run never replaces an earlier one); outputs/demo-qlora
    # points at the latest, for the commands in the README.
    TINY_DIR=${TINY_DIR:-artifacts/tiny-mistral}
    LATEST=outputs/demo-qlora
    DEMO_DIR=${DEMO_DIR:-$LATEST-$stamp}
    DEMO_MIN_ACCURACY=${DEMO_MIN_ACCURACY:-0.8}
    # One thread per core that is idle now: beside another busy process, threads that share a core
    # stall each other (5-11x slower steps on 2 cores; fcmistral/hardware.py, idle_cores).
    if [ -z "${OMP_NUM_THREADS:-}" ]; then
        OMP_NUM_THREADS=$("$PYTHON" -m fcmistral.hardware)  # a failure here stops the script (set -e)
    fi
    export OMP_NUM_THREADS
    log="$LOG_DIR/demo-$stamp.log"
    echo "No GPU and no MODEL_PATH: running the tiny-model demo with $OMP_NUM_THREADS thread(s) (log: $log)"
    {
        "$PYTHON" -m fcmistral.demo.tiny --out_dir "$TINY_DIR"
        "$PYTHON" train.py --config configs/demo_qlora.yaml --model_path "$TINY_DIR" --output_dir "$DEMO_DIR" "$@"
        "$PYTHON" evaluate.py --model_path "$TINY_DIR" --adapter_path "$DEMO_DIR" \
            --dataset data/sample_heldout.jsonl --output_dir "$DEMO_DIR/heldout-eval" --max_new_tokens 96
        "$PYTHON" -m fcmistral.demo.verdict --train_dir "$DEMO_DIR" --eval_dir "$DEMO_DIR/heldout-eval" \
            --model_path "$TINY_DIR" --min_name_accuracy "$DEMO_MIN_ACCURACY"
    } 2>&1 | tee -i "$log"
    if [ "$(dirname "$DEMO_DIR")" = "$(dirname "$LATEST")" ] && { [ -L "$LATEST" ] || [ ! -e "$LATEST" ]; }; then
        ln -sfn "$(basename "$DEMO_DIR")" "$LATEST"
        echo "demo: adapter in $DEMO_DIR ($LATEST points to it)"
    fi
fi

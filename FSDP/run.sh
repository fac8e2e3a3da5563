#!/usr/bin/env bash
# Full fine-tune with FSDP2 through torchrun. Every variable can be set from the environment;
# arguments after the script go to FSDP/train.py.
#
#   bash FSDP/run.sh                                   # one node, all visible GPUs
#   NNODES=2 NODE_RANK=0 RDZV_ENDPOINT=host0:29500 bash FSDP/run.sh   # on each node, its NODE_RANK
#   NPROC_PER_NODE=2 MODEL_PATH=artifacts/tiny-mistral DATA_PATH=data/sample_train.jsonl \
#       bash FSDP/run.sh --max_steps 20 --compute_dtype fp32          # CPU (gloo), tiny model
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_PATH=${MODEL_PATH:-mistralai/Mistral-7B-v0.1}
DATA_PATH=${DATA_PATH:-glaiveai/glaive-function-calling-v2}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/fsdp}
LOG_DIR=${LOG_DIR:-logs}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
RDZV_ENDPOINT=${RDZV_ENDPOINT:-}
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
NPROC_PER_NODE=${NPROC_PER_NODE:-$([ "$gpus" -gt 0 ] && echo "$gpus" || echo 2)}

if [ "$NNODES" -gt 1 ]; then
    [ -n "$RDZV_ENDPOINT" ] || { echo "error: set RDZV_ENDPOINT=host:port for a multi-node run" >&2; exit 2; }
    launch=(--nnodes="$NNODES" --node_rank="$NODE_RANK" --rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT")
else
    launch=(--standalone)
fi

# One thread per process unless told otherwise (torchrun's own default, set here so that it does not
# print a banner about it).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

mkdir -p "$LOG_DIR"
log="$LOG_DIR/fsdp-$(date +%Y%m%d-%H%M%S)-node$NODE_RANK.log"
echo "FSDP: $NNODES node(s) x $NPROC_PER_NODE process(es), $MODEL_PATH on $DATA_PATH -> $OUTPUT_DIR (log: $log)"
torchrun "${launch[@]}" --nproc_per_node="$NPROC_PER_NODE" FSDP/train.py \
    --model_path "$MODEL_PATH" --data_path "$DATA_PATH" --output_dir "$OUTPUT_DIR" "$@" 2>&1 | tee -i "$log"

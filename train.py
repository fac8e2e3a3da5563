"""QLoRA fine-tuning of a Mistral-style model on glaive function-calling data.

    python train.py --model_path mistralai/Mistral-7B-v0.1 --data_path glaiveai/glaive-function-calling-v2

The base model is loaded in 4-bit NF4 (``--no_4bit`` for plain LoRA), LoRA adapters go on every
linear layer except the output head, and the loss covers assistant turns only (see
fcmistral/labels.py). The rows are split into train/dev; the checkpoint with the lowest dev loss
is the one saved in ``output_dir``, with the tokenizer.
"""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

# fcmistral first: it quiets a bitsandbytes import-time warning that TrainingArguments triggers.
from fcmistral.cli import UserError, run_cli  # isort: skip
import torch
from transformers import DataCollatorForSeq2Seq, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from fcmistral.data import prepare_splits
from fcmistral.labels import IGNORE_INDEX
from fcmistral.hardware import COMPUTE_DTYPE_CHOICES, COMPUTE_DTYPE_HELP, compute_dtype
from fcmistral.modeling import load_model, load_tokenizer, lora_config, wrap_lora
from fcmistral.packing import padding_free_training

log = logging.getLogger("train")


@dataclass
class TrainArguments:
    model_path: str = field(default="mistralai/Mistral-7B-v0.1", metadata={"help": "base model: hub name or folder"})
    data_path: str = field(
        default="glaiveai/glaive-function-calling-v2",
        metadata={"help": "glaive data: hub dataset name or a local .json/.jsonl/.parquet file"},
    )
    output_dir: str = field(default="outputs/qlora", metadata={"help": "checkpoints, logs and the final adapter"})
    max_length: int = field(default=4096, metadata={"help": "tokens per example; longer ones are cut after a whole assistant turn"})
    test_size: float = field(default=0.02, metadata={"help": "fraction of rows held out as the dev set"})
    seed: int = field(default=42, metadata={"help": "seed of the split and of training"})
    no_4bit: bool = field(default=False, metadata={"help": "plain LoRA on a full-precision base instead of QLoRA"})
    compute_dtype: str = field(default="auto", metadata={"help": COMPUTE_DTYPE_HELP, "choices": COMPUTE_DTYPE_CHOICES})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    learning_rate: float = field(
        default=2e-4, metadata={"help": "peak learning rate (the original's 1e-5 is low for LoRA)"}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs over the train split"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: use epochs)"})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "examples per device per step"})
    per_device_eval_batch_size: int = field(default=1, metadata={"help": "examples per device in evaluation"})
    gradient_accumulation_steps: int = field(default=2, metadata={"help": "micro-batches per optimizer step"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "fraction of steps of linear warm-up"})
    eval_steps: int = field(default=1000, metadata={"help": "evaluate on the dev split every N steps"})
    save_steps: int = field(default=1000, metadata={"help": "checkpoint every N steps (a multiple of eval_steps)"})
    save_total_limit: int = field(default=3, metadata={"help": "checkpoints kept (the best one is always kept)"})
    logging_steps: int = field(default=10, metadata={"help": "log the training loss every N steps"})
    eval_on_start: bool = field(default=False, metadata={"help": "evaluate once before training (a baseline loss)"})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "recompute activations to save memory"})
    padding_free: bool = field(
        default=False,
        metadata={"help": "flatten each batch of examples into one sequence without padding (no attention across "
                          "examples: FlashAttention-2 varlen when installed on a GPU, else SDPA per example); batches "
                          "are drawn at random as padded ones are"},
    )
    packing: bool = field(
        default=False,
        metadata={"help": "padding-free, and examples packed into fixed rows of up to max_length tokens (similar "
                          "lengths together); per_device_train_batch_size then counts packed rows"},
    )
    resume_from_checkpoint: str = field(
        default=None, metadata={"help": "a checkpoint folder, or 'last' for the newest one in output_dir"}
    )
    report_to: str = field(default="tensorboard", metadata={"help": "'tensorboard' (when installed), 'wandb', 'none'"})


class SaveOnSignal(TrainerCallback):
    """On Ctrl-C or SIGTERM, finish the current step, write a resumable checkpoint and stop.

    ``signal_number`` records which signal asked, so that the run can end as an interrupted
    process does (exit 128 + N: 130 for Ctrl-C, 143 for SIGTERM), never as a finished one.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._request)

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _request(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        log.warning("stop requested: saving a checkpoint after this step (Ctrl-C again to abort)")
        self.signal_number = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def _resolve_report_to(report_to: str) -> str:
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return "none"
    return report_to


def training_arguments(args: TrainArguments) -> TrainingArguments:
    if args.save_steps % args.eval_steps:
        raise UserError("--save_steps must be a multiple of --eval_steps (the best checkpoint is chosen at saves)")
    return TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_ratio,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        eval_on_start=args.eval_on_start,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        # Mixed precision is a GPU matter; on a CPU the weights are loaded in the compute dtype itself.
        bf16=torch.cuda.is_available() and compute_dtype(args.compute_dtype) == torch.bfloat16,
        fp16=torch.cuda.is_available() and compute_dtype(args.compute_dtype) == torch.float16,
        activation_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        report_to=_resolve_report_to(args.report_to),
        seed=args.seed,
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs an accelerator (a warning on CPU)
        ddp_find_unused_parameters=False,  # multi-GPU: frozen base weights would stall DDP's search
    )


def _resume_target(args: TrainArguments) -> str | bool | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "last":
        if not any(Path(args.output_dir).glob("checkpoint-*")):
            raise UserError(f"--resume_from_checkpoint last: no checkpoint in {args.output_dir!r}")
        return True
    if not Path(args.resume_from_checkpoint).is_dir():
        raise UserError(f"checkpoint folder {args.resume_from_checkpoint!r} does not exist")
    return args.resume_from_checkpoint


def main() -> None:
    parser = HfArgumentParser(TrainArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses()
    compute_dtype(args.compute_dtype)  # decided (and logged) before anything slow
    if args.max_length < 16:
        raise UserError("--max_length must be at least 16 tokens")
    hf_args = training_arguments(args)
    resume = _resume_target(args)
    tokenizer = load_tokenizer(args.model_path)
    train_ds, dev_ds = prepare_splits(args.data_path, tokenizer, args.max_length, args.test_size, args.seed,
                                      report_dir=Path(args.output_dir))
    model = load_model(args.model_path, load_in_4bit=not args.no_4bit, tokenizer=tokenizer,
                       dtype=compute_dtype(args.compute_dtype))
    model.config.use_cache = False  # training: a KV cache is useless, and it defeats packing
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8)
    if args.packing or args.padding_free:
        train_ds, collator = padding_free_training(model, train_ds, args.max_length, pack=args.packing)
        log.info("%s: %d %s, %s attention", "packing" if args.packing else "padding-free", len(train_ds),
                 f"rows of up to {args.max_length} tokens" if args.packing else "examples",
                 model.config._attn_implementation)
    model = wrap_lora(
        model, lora_config(args.lora_r, args.lora_alpha, args.lora_dropout),
        quantized=not args.no_4bit, gradient_checkpointing=args.gradient_checkpointing,
    )
    trainer = Trainer(
        model=model,
        args=hf_args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[stop := SaveOnSignal()],
    )
    trainer.train(resume_from_checkpoint=resume)
    if stop.requested:  # not a finished run: no final adapter, no summary, a non-zero exit
        log.warning("interrupted after step %d of %d: a resumable checkpoint is in %s (continue with "
                    "--resume_from_checkpoint last)", trainer.state.global_step, trainer.state.max_steps,
                    args.output_dir)
        raise SystemExit(128 + stop.signal_number)
    trainer.save_model(args.output_dir)  # the best adapter (load_best_model_at_end) and the tokenizer
    summary = {
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_loss": trainer.state.best_metric,
        "global_step": trainer.state.global_step,
        "eval_history": [h for h in trainer.state.log_history if "eval_loss" in h],
    }
    Path(args.output_dir, "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("best eval loss %s at %s; adapter and tokenizer saved to %s",
             summary["best_eval_loss"], summary["best_checkpoint"], args.output_dir)


if __name__ == "__main__":
    run_cli(main)

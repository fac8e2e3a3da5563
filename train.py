"""QLoRA fine-tuning of a Mistral-style model on glaive function-calling data.

    python train.py --model_path mistralai/Mistral-7B-v0.1 --data_path glaiveai/glaive-function-calling-v2

The base model is loaded in 4-bit NF4 (``--load_in_4bit false`` for plain LoRA), LoRA adapters go on every
linear layer except the output head, and the loss covers assistant turns only (see
fcmistral/data/labels.py). The rows are split into train/dev; the checkpoint with the lowest dev loss
is the one saved in ``output_dir``, with the tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fcmistral.arguments import CallEvalArguments, DataArguments, check_model_path, compute_dtype_field, parse_arguments
from fcmistral.cli import run_cli
from fcmistral.data.augment import Augmentation
from fcmistral.data.epochs import EpochDraws
from fcmistral.data.labels import IGNORE_INDEX, SupervisedLogits
from fcmistral.data.loading import load_rows, prepare_splits
from fcmistral.data.packing import padding_free_training
from fcmistral.errors import UserError
from fcmistral.hardware import compute_dtype
from fcmistral.modeling import load_model, load_tokenizer
from fcmistral.outputs import RESUME_OR_OVERWRITE, check_output_dir
from fcmistral.training.checkpoints import latest_complete_checkpoint
from fcmistral.training.lora import lora_config, wrap_lora

if TYPE_CHECKING:
    from transformers import TrainingArguments

log = logging.getLogger("train")


@dataclass
class QLoRAArguments:
    """This script's own options; every Trainer option (``--optim``, ``--deepspeed``, ``--report_to
    wandb``, ``--torch_compile``, ...) is parsed into ``TrainingArguments`` beside them."""

    model_path: str = field(default="mistralai/Mistral-7B-v0.1", metadata={"help": "base model: hub name or folder"})
    load_in_4bit: bool = field(default=True, metadata={
        "help": "QLoRA: the base in 4-bit NF4 (--load_in_4bit false: plain LoRA on a full-precision base)"})
    compute_dtype: str = compute_dtype_field()
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "train into an --output_dir that already holds files (its checkpoints and adapter may be replaced)"})

    def __post_init__(self) -> None:
        self.model_path = check_model_path(self.model_path)


# Where this project's recipe differs from the Trainer's defaults (all of them can be overridden).
TRAINING_DEFAULTS = dict(
    output_dir="outputs/qlora",
    learning_rate=2e-4,  # for LoRA; 1e-5 (a full fine-tune's rate) barely moves the adapters
    num_train_epochs=1.0,
    per_device_train_batch_size=1,
    per_device_eval_batch_size=1,
    gradient_accumulation_steps=2,
    lr_scheduler_type="cosine",
    warmup_steps=0.03,  # a ratio of the total steps
    eval_strategy="steps",
    eval_steps=1000,
    save_steps=1000,  # a multiple of eval_steps: the best checkpoint is chosen at saves
    save_total_limit=3,
    load_best_model_at_end=True,
    metric_for_best_model="eval_loss",
    greater_is_better=False,
    logging_steps=10,
    logging_first_step=True,
    activation_checkpointing=True,
    activation_checkpointing_kwargs={"use_reentrant": False},
    report_to="tensorboard",  # dropped when tensorboard is not installed
    remove_unused_columns=False,  # the collators need the labels column
    dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs an accelerator (a warning on CPU)
    ddp_find_unused_parameters=False,  # multi-GPU: frozen base weights would stall DDP's search
)


# Options that must be above 0: a 0 crashes later with a traceback, or (eval_steps, save_steps)
# is quietly replaced by another value.
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "eval_steps",
            "save_steps", "logging_steps", "max_length", "lora_r", "lora_alpha", "call_eval_limit",
            "call_eval_max_new_tokens")


def parse_all(argv: list[str] | None = None) -> tuple[QLoRAArguments, DataArguments, CallEvalArguments,
                                                     TrainingArguments]:
    """The four sets of options. Mixed precision follows the compute dtype on a GPU (on a CPU
    the weights are loaded in the compute dtype itself)."""
    from transformers import TrainingArguments

    # transformers' old name for the option: it only counts when the new one is unset, which our
    # default never leaves it, so it is renamed here.
    argv = [re.sub(r"^--gradient_checkpointing\b", "--activation_checkpointing", a)
            for a in (sys.argv[1:] if argv is None else argv)]
    if "--no_4bit" in argv:  # this script's old spelling, kept as a hidden alias
        log.warning("--no_4bit is now --load_in_4bit false (the name every script uses)")
        argv = [x for a in argv for x in (("--load_in_4bit", "false") if a == "--no_4bit" else (a,))]
    types, description = (QLoRAArguments, DataArguments, CallEvalArguments, TrainingArguments), __doc__.split("\n\n")[0]
    # Parsed twice: the compute dtype (from the command line or a --config file) decides the
    # default of --bf16/--fp16, which the second parse applies unless they are given.
    script = parse_arguments(types, description, TRAINING_DEFAULTS, argv, positive=POSITIVE)[0]
    dtype = compute_dtype(script.compute_dtype, script.model_path)  # decided (and logged) before anything slow
    cuda = torch.cuda.is_available()
    defaults = {**TRAINING_DEFAULTS, "bf16": cuda and dtype == torch.bfloat16, "fp16": cuda and dtype == torch.float16}
    script, data, calls, training = parse_arguments(types, description, defaults, argv, positive=POSITIVE)
    if "tensorboard" in training.report_to and importlib.util.find_spec("tensorboard") is None:
        training.report_to = [r for r in training.report_to if r != "tensorboard"]
    check_settings(script, data, training)
    calls.check_metric(training.metric_for_best_model, training.greater_is_better)
    return script, data, calls, training


def check_settings(script: QLoRAArguments, data: DataArguments, training: TrainingArguments) -> None:
    """Settings that would crash later with a traceback, refused with one line (see also POSITIVE)."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    if data.max_length < 16:
        raise UserError("--max_length must be at least 16 tokens")
    if not 0 <= script.lora_dropout < 1:
        raise UserError("--lora_dropout must be in [0, 1)")
    unknown = [r for r in training.report_to if r not in ("none", "all", *INTEGRATION_TO_CALLBACK)]
    if unknown:
        raise UserError(f"--report_to {', '.join(unknown)}: choose from none, all, {', '.join(INTEGRATION_TO_CALLBACK)}")


def _resume_target(args: TrainingArguments) -> str | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "last":
        checkpoint = latest_complete_checkpoint(args.output_dir)
        if checkpoint is None:
            raise UserError(f"--resume_from_checkpoint last: no complete checkpoint in {args.output_dir!r}")
        return str(checkpoint)
    if not Path(args.resume_from_checkpoint).is_dir():
        raise UserError(f"checkpoint folder {args.resume_from_checkpoint!r} does not exist")
    return args.resume_from_checkpoint


def main() -> None:
    # Imported here, under run_cli's logging set-up: importing them loads bitsandbytes, which warns
    # about an optional kernel package users cannot act on.
    from transformers import DataCollatorForSeq2Seq, set_seed

    from fcmistral.evaluation.probes import probe_metrics
    from fcmistral.training.callbacks import EpochDrawCallback, SaveOnSignal
    from fcmistral.training.trainer import CallTrainer

    script, data, calls, args = parse_all()
    check_output_dir(args.output_dir, "--output_dir", script.overwrite_output_dir or args.resume_from_checkpoint,
                     RESUME_OR_OVERWRITE)
    resume = _resume_target(args)
    tokenizer = load_tokenizer(script.model_path)
    train_ds, dev_ds = prepare_splits(data.data_path, tokenizer, data.max_length, data.test_size, args.seed,
                                      report_dir=Path(args.output_dir), augmentation=Augmentation.of(data),
                                      decisions=data.decision_weight != 1)
    # Seeded before the model exists: the Trainer seeds only in its own __init__, after LoRA's A
    # matrices were drawn, so two runs with one --seed used to start from different adapters.
    set_seed(args.seed)
    model = load_model(script.model_path, load_in_4bit=script.load_in_4bit, tokenizer=tokenizer,
                       dtype=compute_dtype(script.compute_dtype, script.model_path))
    model.config.use_cache = False  # training: a KV cache is useless, and it defeats packing
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8)
    if data.packing or data.padding_free:
        train_ds, collator = padding_free_training(model, train_ds, data.max_length, pack=data.packing)
        log.info("%s: %d %s, %s attention", "packing" if data.packing else "padding-free", len(train_ds),
                 f"rows of up to {data.max_length} tokens" if data.packing else "examples",
                 model.config._attn_implementation)
    model = wrap_lora(
        model, lora_config(script.lora_r, script.lora_alpha, script.lora_dropout),
        gradient_checkpointing=bool(args.activation_checkpointing),
    )
    trainer = CallTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=SupervisedLogits(collator, data.decision_weight),
        callbacks=[stop := SaveOnSignal(), *([EpochDrawCallback(train_ds)] if isinstance(train_ds, EpochDraws) else [])],
        extra_metrics=probe_metrics(calls, load_rows(calls.call_eval_data, required=()), tokenizer,
                                    args.metric_for_best_model) if calls.call_eval_data else None,
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
        "metric_for_best_model": args.metric_for_best_model,
        "best_metric": trainer.state.best_metric,
        "best_eval_loss": min((h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h), default=None),
        "global_step": trainer.state.global_step,
        "eval_history": [h for h in trainer.state.log_history if "eval_loss" in h],
        "train_metrics": next((h for h in reversed(trainer.state.log_history) if "train_runtime" in h), {}),
    }
    Path(args.output_dir, "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("best %s %s at %s; adapter and tokenizer saved to %s", args.metric_for_best_model,
             summary["best_metric"], summary["best_checkpoint"], args.output_dir)


if __name__ == "__main__":
    run_cli(main)

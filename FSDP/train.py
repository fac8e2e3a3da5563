"""Full fine-tune with PyTorch FSDP2, launched by torchrun (see FSDP/run.sh).

    torchrun --nproc_per_node=8 FSDP/train.py --model_path mistralai/Mistral-7B-v0.1 \
        --data_path glaiveai/glaive-function-calling-v2 --output_dir outputs/fsdp

Same data pipeline and prompt format as the QLoRA script (fcmistral), every parameter trained.
Rows longer than --max_length are dropped, not cut. The loss is weighted by
supervised tokens over the whole global batch (all ranks, all accumulation steps), so a run on 2
processes follows the same curve as one on 1 process with the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from fcmistral.arguments import (
    CALL_METRICS,
    CallEvalArguments,
    DataArguments,
    check_model_path,
    compute_dtype_field,
    parse_arguments,
)
from fcmistral.cli import run_cli
from fcmistral.data.augment import Augmentation
from fcmistral.data.epochs import EpochDraws
from fcmistral.data.labels import IGNORE_INDEX, SupervisedLogits, with_supervised_logits
from fcmistral.data.loading import load_rows, prepare_splits
from fcmistral.data.packing import padding_free_training
from fcmistral.errors import UserError
from fcmistral.hardware import compute_dtype
from fcmistral.modeling import load_tokenizer
from fcmistral.outputs import RESUME_OR_OVERWRITE, check_output_dir
from fcmistral.training import fsdp
from fcmistral.training.loss import supervised_loss

log = logging.getLogger("fsdp")


@dataclass
class FullFinetuneArguments:
    """Options named as train.py (and the HF Trainer) name them; the data options are
    fcmistral.arguments.DataArguments, shared with train.py."""

    model_path: str = field(default="mistralai/Mistral-7B-v0.1", metadata={"help": "base model: hub name or folder"})
    output_dir: str = field(default="outputs/fsdp", metadata={"help": "best/, final/, checkpoints/ and metrics.jsonl"})
    seed: int = field(default=42, metadata={"help": "seed of the split, the shuffling and the run"})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "examples per process per micro-batch"})
    per_device_eval_batch_size: int = field(default=1, metadata={"help": "examples per process per dev batch"})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "micro-batches per optimizer step"})
    num_train_epochs: int = field(default=1, metadata={"help": "epochs over the train split"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps in all (-1: from the epochs)"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms and biases)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    warmup_steps: float = field(default=0.03, metadata={"help": "linear warm-up: steps, or a fraction of all steps if < 1"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate every N steps (0: 3 times per epoch)"})
    metric_for_best_model: str = field(default="eval_loss", metadata={
        "help": "what best/ is chosen by: eval_loss, or with --call_eval_data call_accuracy, call_exact or "
                "no_call_accuracy (with --greater_is_better true)"})
    greater_is_better: bool = field(default=False, metadata={"help": "a higher --metric_for_best_model is better"})
    save_steps: int = field(default=0, metadata={"help": "resumable checkpoint every N steps (0: at evaluations)"})
    logging_steps: int = field(default=1, metadata={"help": "log the training loss every N steps"})
    compute_dtype: str = compute_dtype_field(["auto", "bf16", "fp32"], help=(
        "auto (bf16 where the GPU or CPU runs it natively and, on a CPU, the model is wide enough, else fp32), "
        "bf16 (mixed precision: fp32 master weights and gradient reduction) or fp32. fp16 is not offered: a full "
        "fine-tune in fp16 needs loss scaling, which this loop does not do"))
    activation_checkpointing: bool = field(default=True, metadata={"help": "recompute activations in the backward"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "train into an --output_dir that already holds files (its best/, final/ and checkpoint are replaced)"})
    resume_from_checkpoint: str = field(default=None, metadata={
        "help": "'last': continue from the checkpoint in output_dir/checkpoints"})
    report_to: str = field(default="tensorboard", metadata={
        "help": "'tensorboard' (output_dir/runs, when installed) or 'none'; metrics.jsonl is always written",
        "choices": ["tensorboard", "none"]})

    def __post_init__(self) -> None:
        self.model_path = check_model_path(self.model_path)
        if not self.metric_for_best_model.startswith("eval_"):  # as the Trainer reads it
            self.metric_for_best_model = "eval_" + self.metric_for_best_model
        if self.metric_for_best_model.removeprefix("eval_") not in ("loss", *CALL_METRICS):
            raise UserError(f"--metric_for_best_model {self.metric_for_best_model}: choose from loss, "
                            f"{', '.join(CALL_METRICS)}")


def full_finetune_dtype(name: str, model_path: str) -> torch.dtype:
    """The hardware's compute dtype for the model, except that fp16 (an older GPU) falls back to fp32."""
    dtype = compute_dtype(name, model_path)
    if dtype == torch.float16:
        log.info("fp16 needs loss scaling for a full fine-tune: computing in fp32 instead")
        return torch.float32
    return dtype


def tensorboard_writer(log_dir: Path):
    """A tensorboard writer, or None (with a note) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(log_dir))


def warmup_steps(value: float, total_steps: int) -> int:
    """Warm-up steps as TrainingArguments reads ``--warmup_steps``: a fraction of all steps if < 1."""
    return math.ceil(value * total_steps) if value < 1 else int(value)


def dev_batches(dev, collate, env: fsdp.DistEnv, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """This rank's share of the dev set, padded to the same number of batches on every rank."""
    mine = [dev[i] for i in range(env.rank, len(dev), env.world_size)]
    per_rank = math.ceil(math.ceil(len(dev) / env.world_size) / batch_size)
    batches = [collate(mine[i:i + batch_size]) for i in range(0, len(mine), batch_size)]
    while len(batches) < per_rank:  # no example left here: a forward that adds no loss
        filler = collate([dev[0]])
        filler["labels"].fill_(IGNORE_INDEX)
        batches.append(with_supervised_logits(filler))
    return batches


def main() -> None:
    # Imported here, under run_cli's logging set-up: importing them loads bitsandbytes, which warns
    # about an optional kernel package users cannot act on.
    from transformers import DataCollatorForSeq2Seq, get_cosine_schedule_with_warmup

    from fcmistral.evaluation.probes import probe_metrics

    args, data, calls = parse_arguments((FullFinetuneArguments, DataArguments, CallEvalArguments),
                                        __doc__.split("\n\n")[0], defaults={"test_size": 0.05}, positive=(
                                            "per_device_train_batch_size", "per_device_eval_batch_size",
                                            "gradient_accumulation_steps", "logging_steps", "max_length",
                                            "learning_rate", "call_eval_limit", "call_eval_max_new_tokens"))
    calls.check_metric(args.metric_for_best_model, args.greater_is_better)
    if args.resume_from_checkpoint not in (None, "last"):
        raise UserError("--resume_from_checkpoint: FSDP/train.py continues from the checkpoint in "
                        "OUTPUT_DIR/checkpoints; pass 'last'")
    resume = args.resume_from_checkpoint == "last"
    env = fsdp.init_distributed()
    if not env.is_main:  # one log and one progress bar per run, not per rank
        logging.getLogger().setLevel(logging.WARNING)
        datasets.disable_progress_bars()
    dtype = full_finetune_dtype(args.compute_dtype, args.model_path)  # decided (and logged) before anything slow
    check_output_dir(args.output_dir, "--output_dir", args.overwrite_output_dir or resume,
                     RESUME_OR_OVERWRITE)
    fsdp.barrier()  # every rank has looked at the folder before rank 0 writes anything into it
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    checkpoint = fsdp.latest_checkpoint(out / "checkpoints")
    if resume and checkpoint is None:
        raise UserError(f"--resume_from_checkpoint last: no checkpoint in {args.output_dir!r}")

    tokenizer = load_tokenizer(args.model_path)
    train_ds, dev_ds = prepare_splits(data.data_path, tokenizer, data.max_length, data.test_size, args.seed,
                                      overflow="drop", report_dir=out, report=env.is_main,
                                      augmentation=Augmentation.of(data), decisions=data.decision_weight != 1)
    model, no_decay = fsdp.load_sharded(args.model_path, tokenizer, env, dtype,
                                        args.activation_checkpointing)
    save_dtype = model.config.dtype if isinstance(model.config.dtype, torch.dtype) else torch.float32
    optimizer = torch.optim.AdamW(fsdp.optimizer_groups(model, no_decay, args.weight_decay), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2))

    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, return_tensors="pt")
    if data.packing or data.padding_free:
        train_ds, collate = padding_free_training(model, train_ds, data.max_length, pack=data.packing)
    collate = SupervisedLogits(collate, data.decision_weight)
    sampler = DistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    loader = DataLoader(train_ds, batch_size=args.per_device_train_batch_size, sampler=sampler, collate_fn=collate)
    steps_per_epoch = len(loader) // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise UserError("fewer examples than one global batch: lower the batch size or accumulation")
    total_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    eval_steps = args.eval_steps or max(1, steps_per_epoch // 3)
    save_steps = args.save_steps or eval_steps
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps(args.warmup_steps, total_steps), total_steps)
    dev = dev_batches(dev_ds, collate, env, args.per_device_eval_batch_size)
    probes = probe_metrics(calls, load_rows(calls.call_eval_data, required=()), tokenizer,
                           args.metric_for_best_model) if calls.call_eval_data else None

    # best_metric: --metric_for_best_model's best value so far, reached at best_step (None: no evaluation yet)
    state = {"step": 0, "best_eval_loss": float("inf"), "best_metric": None, "best_step": None}
    if resume:
        state = fsdp.load_checkpoint(checkpoint, model, optimizer, env)
        if "best_metric" not in state:  # a checkpoint of an earlier version, which chose best/ by the dev loss
            state.update(best_metric=state["best_eval_loss"] if args.metric_for_best_model == "eval_loss" else None,
                         best_step=None)
        scheduler.load_state_dict(state.pop("scheduler"))
        log.info("resumed at step %d", state["step"])
    metrics_path = out / "metrics.jsonl"
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.exists() else [])
                if resume and json.loads(line)["step"] <= state["step"]]  # drop what will be redone
        metrics_path.write_text("".join(line + "\n" for line in kept))
        log.info("%d train %s / %d dev examples, %d processes, global batch %d, %d steps, %s attention",
                 len(train_ds), "packed rows" if data.packing else "examples", len(dev_ds), env.world_size,
                 args.per_device_train_batch_size * env.world_size * args.gradient_accumulation_steps, total_steps,
                 model.config._attn_implementation)

    writer = tensorboard_writer(out / "runs") if env.is_main and args.report_to == "tensorboard" else None

    def record(entry: dict) -> None:
        if env.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            for name, value in entry.items():
                if writer is not None and name != "step":
                    writer.add_scalar(("eval/" if name.startswith("eval") else "train/") + name, value, entry["step"])

    model.train()
    progress = tqdm(total=total_steps, initial=state["step"], disable=not env.is_main, desc="training")
    while state["step"] < total_steps:
        epoch, step_in_epoch = divmod(state["step"], steps_per_epoch)
        sampler.set_epoch(epoch)
        if isinstance(train_ds, EpochDraws):  # each epoch its own augmentation draw
            train_ds.set_epoch(epoch)
        micro_batches = iter(loader)
        for _ in range(step_in_epoch * args.gradient_accumulation_steps):  # data position on resume
            next(micro_batches)
        for _ in range(step_in_epoch, steps_per_epoch):
            batches = [next(micro_batches) for _ in range(args.gradient_accumulation_steps)]
            global_tokens = fsdp.all_reduce_sum(fsdp.supervised_tokens(batches), env.device)
            step_loss = 0.0
            for i, batch in enumerate(batches):
                model.set_requires_gradient_sync(i == len(batches) - 1)  # reduce once per step
                # the sum over this batch / the supervised tokens of the global batch
                loss = supervised_loss(model, fsdp.to_device(batch, env.device), global_tokens)
                (loss * env.world_size).backward()  # FSDP averages gradients over ranks: undo it
                step_loss += loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            progress.update(1)
            if state["step"] % args.logging_steps == 0:
                train_loss = fsdp.all_reduce_sum(step_loss, env.device)
                grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
                record({"step": state["step"], "loss": train_loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]})
                progress.set_postfix(loss=f"{train_loss:.4f}")
            last = state["step"] == total_steps
            if state["step"] % eval_steps == 0 or last:
                evaluation = {"eval_loss": fsdp.evaluate(model, dev, env)}
                if probes is not None:
                    evaluation.update({f"eval_{k}": v for k, v in probes(model).items()})
                record({"step": state["step"], **evaluation})
                log.info("step %d: %s", state["step"], ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items()))
                state["best_eval_loss"] = min(state["best_eval_loss"], evaluation["eval_loss"])
                value, best = evaluation.get(args.metric_for_best_model), state["best_metric"]
                if value is not None and (best is None or (value > best if args.greater_is_better else value < best)):
                    state["best_metric"], state["best_step"] = value, state["step"]
                    fsdp.save_hf_folder(model, tokenizer, out / "best", save_dtype, env)
            if state["step"] % save_steps == 0 or last:
                fsdp.save_checkpoint(out / "checkpoints", model, optimizer,
                                     {**state, "scheduler": scheduler.state_dict()}, env)
            if last:
                break
    progress.close()
    if writer is not None:
        writer.close()
    fsdp.save_hf_folder(model, tokenizer, out / "final", save_dtype, env)
    if env.is_main:
        (out / "summary.json").write_text(json.dumps({
            "steps": state["step"], "best_eval_loss": state["best_eval_loss"],
            "metric_for_best_model": args.metric_for_best_model, "best_metric": state["best_metric"],
            "best_step": state["best_step"]}))
        log.info("done: best %s %.4f at step %s (model in %s)", args.metric_for_best_model, state["best_metric"],
                 state["best_step"], out / "best")


if __name__ == "__main__":
    run_cli(main)
    fsdp.shutdown(0)

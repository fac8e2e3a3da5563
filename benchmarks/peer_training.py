"""Training side by side with TRL's SFTTrainer: the same base, rows, QLoRA settings, batch, learning
rate and epoch, each run a process of its own; speed, memory, and dev loss after the same training.

    python benchmarks/peer_training.py                        # SmolLM2-135M-Instruct (built when missing)
    python benchmarks/peer_training.py --tiny --rows 48       # the tiny model: a quick run of the same code

Runs (--runs picks some):
  ours_padding_free  train.py --padding_free (the demo's recipe): batches of whole examples, no padding
  ours_packing       train.py --packing: rows of up to --max_length tokens, attention per example
  trl_padded         SFTTrainer with assistant_only_loss=True on the saved chat template (its {% generation %}
                     markers), its default padded batches
  trl_padding_free   the same with padding_free=True
  trl_packing        the same with packing=True (best-fit decreasing, padding-free)
Both sides get the rows train.py's own split gives (fcmistral.data.loading.split_rows), one epoch,
the base loaded by the same loader, the same LoraConfig, optimizer, schedule and seed. Packed runs
take --batch_size // 4 rows of --max_length tokens per step, so about as many tokens per step as
the others. The dev loss of every adapter is computed here afterwards, on the same dev examples, with
this project's labels and with TRL's (its assistant spans: no separator, next tag or EOS after a turn). Peak RSS: each run's process (wait4). Achieved FLOP/s: 4 x the
model's matmul parameters x the real (non-padding) tokens / train time (forward, and backward to the
activations: the frozen weights get no gradient; LoRA's own products and attention left out), as a
fraction of a square matmul's rate in the compute dtype measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNS = ("ours_padding_free", "ours_packing", "trl_padded", "trl_padding_free", "trl_packing")
SHARED = dict(gradient_accumulation_steps=1, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
              optim="adamw_torch", max_grad_norm=1.0, seed=42, logging_steps=5)


def run_process(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command``; (wall seconds, its peak RSS in MiB), or exit with the end of its log."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[1:3])} failed (exit {process.returncode}); end of {log}:\n"
                         f"{log.read_text()[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def ours(run: str, args: argparse.Namespace, data: Path, dtype: str, out: Path) -> list[str]:
    packing = run == "ours_packing"
    shared = [x for k, v in SHARED.items() for x in (f"--{k}", str(v))]
    return [sys.executable, "train.py", "--model_path", str(args.model_path), "--data_path", str(data),
            "--output_dir", str(out), "--test_size", str(args.test_size), "--max_length", str(args.max_length),
            "--packing" if packing else "--padding_free", "true", "--num_train_epochs", "1",
            "--per_device_train_batch_size", str(max(1, args.batch_size // 4) if packing else args.batch_size),
            "--learning_rate", str(args.learning_rate), "--lora_dropout", "0", "--compute_dtype", dtype,
            "--activation_checkpointing", "false", "--eval_strategy", "no", "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--report_to", "none", *shared]


def trl_worker(config_path: str) -> None:
    """One TRL run (this script started again with --trl_worker): the config names everything."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from fcmistral.modeling import load_model, load_tokenizer
    from fcmistral.training.lora import lora_config

    config = json.loads(Path(config_path).read_text())
    dtype = getattr(torch, config["dtype"])
    tokenizer = load_tokenizer(config["model_path"])
    model = load_model(config["model_path"], load_in_4bit=True, tokenizer=tokenizer, dtype=dtype)
    packing, padding_free = config["run"] == "trl_packing", config["run"] == "trl_padding_free"
    sft = SFTConfig(
        output_dir=config["output_dir"], num_train_epochs=1, learning_rate=config["learning_rate"],
        per_device_train_batch_size=max(1, config["batch_size"] // 4) if packing else config["batch_size"],
        # TRL refuses max_length with padding_free alone (it would not be enforced): no row is longer.
        max_length=None if padding_free else config["max_length"], assistant_only_loss=True, packing=packing, padding_free=padding_free,
        gradient_checkpointing=False, bf16=torch.cuda.is_available() and dtype == torch.bfloat16,
        eval_strategy="no", save_strategy="no", report_to="none", dataloader_pin_memory=False, **SHARED)
    rows = [json.loads(line) for line in Path(config["data"]).read_text().splitlines()]
    trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(dropout=0.0))
    result = trainer.train()
    trainer.save_model(config["output_dir"])
    Path(config["output_dir"], "train_metrics.json").write_text(json.dumps(result.metrics))


def trl_labels(rows: list[dict], example: dict, tokenizer) -> list[int] | None:
    """TRL's labels for one of our examples: the chat template's {% generation %} spans (what
    assistant_only_loss trains on) over our ids; None where the template's text differs from the row's."""
    from fcmistral.format.glaive import openai_messages, parse_row

    row = parse_row(rows[example["row_index"]])
    rendered = tokenizer.apply_chat_template(openai_messages(row.turns, True), tools=row.functions, tokenize=True,
                                             return_dict=True, return_assistant_tokens_mask=True)
    ids, theirs, mask = list(example["input_ids"]), list(rendered["input_ids"]), list(rendered["assistant_masks"])
    # Ours adds the tokenizer's BOS and EOS around the text (training supervises the EOS); the template
    # renders neither, so TRL's rows have none: aligned on the text, the EOS is ours only.
    if ids[:1] == [tokenizer.bos_token_id] != theirs[:1]:
        theirs, mask = ids[:1] + theirs, [0] + mask
    if ids[-1:] == [tokenizer.eos_token_id] != theirs[-1:]:
        theirs, mask = theirs + ids[-1:], mask + [0]
    return [token if on else -100 for token, on in zip(ids, mask)] if ids == theirs else None


def label_agreement(examples, theirs: list[list[int] | None]) -> dict:
    """Our labels against TRL's, token by token, on the examples whose text both render alike."""
    both = ours_only = trl_only = 0
    for example, labels in zip(examples, theirs):
        for ours_label, trl_label in zip(example["labels"], labels or []):
            both += ours_label != -100 and trl_label != -100
            ours_only += ours_label != -100 and trl_label == -100
            trl_only += trl_label != -100 and ours_label == -100
    return {"examples_with_same_text": f"{sum(t is not None for t in theirs)}/{len(theirs)}",
            "supervised_by_both": both, "ours_only": ours_only, "trl_only": trl_only,
            "agreement": round(both / max(1, both + ours_only + trl_only), 4)}


def dev_loss(model_path: str, adapter: Path, dev: list[dict], dtype) -> float:
    """Mean loss per supervised token of the dev examples, the adapter on the 4-bit base."""
    import torch
    from peft import PeftModel

    from fcmistral.modeling import load_model, load_tokenizer

    model = PeftModel.from_pretrained(load_model(model_path, load_in_4bit=True, tokenizer=load_tokenizer(model_path),
                                                 dtype=dtype), str(adapter)).eval()
    total = count = 0.0
    with torch.no_grad():
        for example in dev:
            labels = torch.tensor([example["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=torch.tensor([example["input_ids"]]), labels=labels).loss) * n
            count += n
    return round(total / count, 4)


def matmul_peak(dtype) -> float:
    """FLOP/s of a 2048-square matmul in ``dtype`` on this machine's threads (best of 5)."""
    import torch

    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    from benchmarks.common import timed

    a @ b
    times: dict[str, float] = {}
    for _ in range(5):
        with timed(times, "matmul"):  # keeps the best of the five
            a @ b
    return 2 * 2048**3 / times["matmul"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", type=Path, default=REPO / "artifacts" / "smollm2-135m",
                        help="SmolLM2 folder (built when missing)")
    parser.add_argument("--tiny", action="store_true", help="the tiny model instead (built in --output_dir)")
    parser.add_argument("--rows", type=int, default=80, help="the first N sample rows, train and dev together")
    parser.add_argument("--test_size", type=float, default=0.2, help="fraction held out as dev rows (train.py's split)")
    parser.add_argument("--batch_size", type=int, default=8, help="examples per step (packed runs: a quarter, in rows)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {', '.join(RUNS)}")
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / "peer-training")
    parser.add_argument("--trl_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_worker:
        return trl_worker(args.trl_worker)
    runs = [r for r in args.runs.split(",") if r]
    if unknown := set(runs) - set(RUNS):
        raise SystemExit(f"error: --runs: unknown {sorted(unknown)}; choose from {', '.join(RUNS)}")
    import torch

    from fcmistral.data.loading import load_rows, split_rows, tokenize_rows
    from fcmistral.format.glaive import openai_messages, parse_row
    from fcmistral.hardware import compute_dtype
    from fcmistral.modeling import load_model, load_tokenizer

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        from fcmistral.demo.tiny import build_tiny_model

        args.model_path = Path(build_tiny_model(str(out / "tiny")))
    elif not (args.model_path / "config.json").is_file():
        run_process([sys.executable, "-m", "fcmistral.artifacts.smollm2", "--output", str(args.model_path)],
                    out / "build.log")
    data = out / "rows.jsonl"
    data.write_text("".join((REPO / "data" / "sample_train.jsonl").read_text().splitlines(keepends=True)[:args.rows]))
    dtype = compute_dtype("auto", str(args.model_path))
    dtype_name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    tokenizer = load_tokenizer(str(args.model_path))
    splits = split_rows(load_rows(str(data)), args.test_size, SHARED["seed"])  # what train.py splits
    rows = [json.loads(line) for line in data.read_text().splitlines()]  # row_index counts these
    train_rows = [rows[i] for i in splits["train"]["row_index"]]
    train, _, _ = tokenize_rows(splits["train"], tokenizer, args.max_length, "truncate")
    dev, _, _ = tokenize_rows(splits["test"], tokenizer, args.max_length, "truncate")
    trl_data = out / "trl_train.jsonl"
    trl_data.write_text("".join(json.dumps({"messages": openai_messages((row := parse_row(r)).turns, True),
                                            "tools": json.dumps(row.functions)}) + "\n" for r in train_rows))
    real_tokens = sum(len(ids) for ids in train["input_ids"])
    supervised = {"ours": sum(sum(label != -100 for label in labels) for labels in train["labels"])}
    agreement = label_agreement(train, [trl_labels(rows, example, tokenizer) for example in train])
    supervised["trl"] = agreement["supervised_by_both"] + agreement["trl_only"]
    dev_sets = {"dev_loss": [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in dev]}
    dev_sets["dev_loss_trl_labels"] = [{"input_ids": e["input_ids"], "labels": labels} for e in dev
                                       if (labels := trl_labels(rows, e, tokenizer)) is not None]
    model = load_model(str(args.model_path), load_in_4bit=False, dtype=dtype)
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    del model

    results = []
    for run in runs:
        adapter = out / run
        if run.startswith("ours"):
            command = ours(run, args, data, dtype_name, adapter) + ["--overwrite_output_dir", "true"]
        else:
            config = out / f"{run}.json"
            config.write_text(json.dumps({"run": run, "model_path": str(args.model_path), "data": str(trl_data),
                                          "output_dir": str(adapter), "dtype": str(dtype).split(".")[-1],
                                          "learning_rate": args.learning_rate, "batch_size": args.batch_size,
                                          "max_length": args.max_length}))
            command = [sys.executable, __file__, "--trl_worker", str(config)]
        record = adapter / "run.json"  # a finished run is reused: --runs again re-scores it without training
        if not record.is_file():
            wall, peak = run_process(command, out / f"{run}.log")
            record.write_text(json.dumps({"wall_s": wall, "peak_rss_mib": peak}))
        wall, peak = json.loads(record.read_text()).values()
        metrics = (json.loads((adapter / "train_summary.json").read_text())["train_metrics"] if run.startswith("ours")
                   else json.loads((adapter / "train_metrics.json").read_text()))
        seconds = metrics["train_runtime"]
        side = "ours" if run.startswith("ours") else "trl"
        results.append({"run": run, "train_s": round(seconds, 1), "wall_s": round(wall, 1), "peak_rss_mib": round(peak),
                        "real_tokens_per_s": round(real_tokens / seconds, 1),
                        "supervised_tokens_per_s": round(supervised[side] / seconds, 1),
                        "model_flop_per_s": 4 * matmul_params * real_tokens / seconds,
                        **{name: dev_loss(str(args.model_path), adapter, examples, dtype)
                           for name, examples in dev_sets.items()}})
        print(f"{run}: {results[-1]}", file=sys.stderr, flush=True)
    peak_flops = matmul_peak(dtype)
    baseline = next((r for r in results if r["run"] == "trl_padded"), None)
    for r in results:
        r["of_matmul_peak"] = round(r["model_flop_per_s"] / peak_flops, 4)
        r["model_flop_per_s"] = f"{r['model_flop_per_s'] / 1e9:.2f} GFLOP/s"
        if baseline:
            r["speed_vs_trl_padded"] = round(r["real_tokens_per_s"] / baseline["real_tokens_per_s"], 2)
    report = {"model": str(args.model_path.name), "compute_dtype": dtype_name, "train_examples": len(train),
              "dev_examples": len(dev), "real_tokens": real_tokens, "supervised_tokens": supervised,
              "matmul_params": matmul_params, "matmul_peak": f"{peak_flops / 1e9:.1f} GFLOP/s ({dtype_name}, 2048^3)",
              "label_agreement": agreement, "date": time.strftime("%Y-%m-%d"), "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print("| run | train s | real tok/s | supervised tok/s | vs TRL padded | peak RSS MiB | dev loss (ours / TRL's "
          "labels) | of matmul peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['train_s']} | {r['real_tokens_per_s']} | {r['supervised_tokens_per_s']} | "
              f"{r.get('speed_vs_trl_padded', '')} | {r['peak_rss_mib']} | {r['dev_loss']} / {r['dev_loss_trl_labels']} | "
              f"{r['of_matmul_peak']:.1%} |")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

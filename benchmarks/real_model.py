"""Does the pipeline teach a real pretrained LM to call functions? SmolLM2-135M-Instruct, before
and after QLoRA on the shipped sample data, with the project's own scripts.

    python benchmarks/real_model.py                         # the full experiment
    python benchmarks/real_model.py --bfcl_limit 0           # every BFCL simple/irrelevance question (GPU)
    python benchmarks/real_model.py --max_steps 2 --max_length 512 --eval_limit 3 --train_rows 40 --bfcl_limit 2   # a smoke run

Steps, each a subprocess as a user would run it: build ``artifacts/smollm2-135m`` when missing
(fcmistral.artifacts.smollm2); evaluate it zero-shot in the glaive format on the held-out sample
rows and on BFCL ``simple`` and ``irrelevance`` (evaluate.py, ``--benchmark bfcl``; the first
``--bfcl_limit`` questions of each on CPU); QLoRA-train it with packing (train.py); merge
(convert_weights.py); evaluate the merged model the same way; export it as GGUF (f32, f16, q8_0)
and count the held-out replies whose calls in llama.cpp are transformers' (llama-cpp-python). Prints a before/after table
(call-name accuracy, exact argument match, BFCL AST and irrelevance accuracy, wall times, peak
memory of the steps) and writes it as JSON to ``OUTPUT_DIR/report.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, log: Path) -> tuple[float, float]:
    """Run one of the project's commands (``python ARGS`` in the repository); return (wall seconds,
    peak memory in MiB).

    The peak is read from the children's maximum resident size, which only grows: each step is
    run in turn, so a step's figure is the largest so far (the report says so).
    """
    command = [sys.executable, *args]
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"error: {' '.join(command[1:3])} failed (exit {result.returncode}); end of {log}:\n{tail}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def evaluate(model: Path, out: Path, args: argparse.Namespace) -> tuple[dict, dict, float, float]:
    """Held-out sample rows, then BFCL simple and irrelevance: (summary, BFCL summary, wall s, peak MiB)."""
    common = ["--model_path", str(model), "--overwrite_output_dir", "--batch_size", "8", "--max_new_tokens", str(args.max_new_tokens),
              "--compute_dtype", args.compute_dtype]
    limit = ["--limit", str(args.eval_limit)] if args.eval_limit else []
    wall, _ = run("evaluate.py", *common, "--dataset", str(args.eval_data), "--output_dir", str(out), *limit,
                  log=out.with_suffix(".log"))
    bfcl_out = out.with_name(out.name + "_bfcl")
    bfcl_limit = ["--limit", str(args.bfcl_limit)] if args.bfcl_limit else []
    bfcl_wall, peak = run("evaluate.py", *common, "--benchmark", "bfcl", "--categories", "simple,irrelevance",
                          "--output_dir", str(bfcl_out), *bfcl_limit, log=bfcl_out.with_suffix(".log"))
    return (json.loads((out / "summary.json").read_text()), json.loads((bfcl_out / "summary.json").read_text()),
            wall + bfcl_wall, peak)


def llama_cpp_agreement(merged: Path, predictions: Path, eval_data: Path, out: Path, types: list[str],
                        max_new_tokens: int) -> dict:
    """The merged model exported as GGUF of each type (convert_weights.py's export) answers the
    held-out prompts in llama.cpp (greedy, as many tokens as evaluate.py, the prompt's tokens as
    training reads them): for each type, how many replies hold the same calls as transformers'
    replies in evaluate.py's ``predictions``."""
    import llama_cpp

    from fcmistral.evaluation.items import eval_items
    from fcmistral.export.gguf import export_gguf
    from fcmistral.format.calls import try_parse_calls
    from fcmistral.generation import cut_at_end_of_turn
    from fcmistral.modeling import load_tokenizer, text_encoder
    from fcmistral.prompt import END_OF_TURN

    records = {r["query_id"]: r for r in map(json.loads, predictions.read_text().splitlines())}
    items = [i for i in eval_items([json.loads(line) for line in eval_data.read_text().splitlines()], None)[0]
             if i.query_id in records]
    tokenizer = load_tokenizer(str(merged))
    encoder = text_encoder(tokenizer)
    agreement = {}
    for outtype in types:
        path = export_gguf(merged, out / f"model-{outtype}.gguf", outtype, overwrite=True)
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=4096, n_threads=2, verbose=False)
        same = 0
        for item in items:
            got: list[int] = []
            for token in llm.generate(encoder.encode(item.prompt).ids, temp=0.0, top_k=1, reset=True):
                if token == llm.token_eos() or len(got) == max_new_tokens:
                    break
                got.append(token)
                if END_OF_TURN in tokenizer.decode(got[-8:]):
                    break
            reply = cut_at_end_of_turn(tokenizer.decode(got, skip_special_tokens=True))
            same += try_parse_calls(reply) == try_parse_calls(records[item.query_id]["output"])
        agreement[outtype] = f"{same}/{len(items)}"
        del llm
        path.unlink()
    return agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", type=Path, default=REPO / "artifacts" / "smollm2-135m",
                        help="SmolLM2 folder (built when missing)")
    parser.add_argument("--train_data", type=Path, default=REPO / "data" / "sample_train.jsonl")
    parser.add_argument("--eval_data", type=Path, default=REPO / "data" / "sample_heldout.jsonl")
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / "real-model")
    parser.add_argument("--train_rows", type=int, default=0, help="train on the first N rows only (0: all)")
    parser.add_argument("--max_steps", type=int, default=120, help="optimizer steps of 2 packed rows of --max_length tokens (120: about 1.1 epochs of the sample data)")
    parser.add_argument("--max_length", type=int, default=1024, help="tokens per packed training row")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--eval_limit", type=int, default=0, help="evaluate the first N held-out items only (0: all)")
    parser.add_argument("--bfcl_limit", type=int, default=100,
                        help="BFCL questions per category (simple, irrelevance), the first N (0: all 400 + 240)")
    parser.add_argument("--max_new_tokens", type=int, default=160, help="tokens per reply (evaluate.py and llama.cpp)")
    parser.add_argument("--compute_dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--gguf_types", default="f32,f16,q8_0",
                        help="export the fine-tuned model as these GGUF types and compare its held-out calls in llama.cpp "
                             "with transformers' (needs llama-cpp-python; empty: skip)")
    parser.add_argument("--skip_zero_shot", action="store_true",
                        help="evaluate the fine-tuned model only (the zero-shot row is in an earlier report)")
    args = parser.parse_args()

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": "SmolLM2-135M-Instruct", "max_steps": args.max_steps}
    if not (args.model_path / "config.json").is_file():
        report["build_s"], _ = run("-m", "fcmistral.artifacts.smollm2", "--output", str(args.model_path),
                                   log=out / "build.log")
    train_data = args.train_data
    if args.train_rows:
        train_data = out / "train_rows.jsonl"
        train_data.write_text("".join(args.train_data.read_text().splitlines(keepends=True)[: args.train_rows]))
    rows = []
    if not args.skip_zero_shot:
        before, before_bfcl, report["zero_shot_eval_s"], _ = evaluate(args.model_path, out / "zero_shot", args)
        rows.append(("zero-shot", before, before_bfcl))
    adapter, merged = out / "qlora", out / "merged"
    report["train_s"], report["train_peak_mib"] = run(
        "train.py", "--model_path", str(args.model_path), "--data_path", str(train_data), "--output_dir", str(adapter),
        "--overwrite_output_dir", "--packing", "true", "--max_length", str(args.max_length), "--max_steps", str(args.max_steps),
        "--learning_rate", str(args.learning_rate), "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--eval_steps", str(max(1, args.max_steps // 3)),
        "--save_steps", str(max(1, args.max_steps // 3)), "--logging_steps", "10", "--report_to", "none",
        "--compute_dtype", args.compute_dtype, "--test_size", "0.05", log=out / "train.log")
    report["merge_s"], _ = run("convert_weights.py", "--model_path", str(args.model_path), "--adapter_path",
                               str(adapter), "--save_path", str(merged), "--overwrite", log=out / "merge.log")
    after, after_bfcl, report["fine_tuned_eval_s"], report["peak_mib_so_far"] = evaluate(merged, out / "fine_tuned",
                                                                                          args)
    rows.append(("after QLoRA", after, after_bfcl))
    types = [t for t in args.gguf_types.split(",") if t]
    if types:
        start = time.perf_counter()
        report["llama_cpp_same_calls_as_transformers"] = llama_cpp_agreement(
            merged, out / "fine_tuned" / "predictions.jsonl", args.eval_data, out, types, args.max_new_tokens)
        report["llama_cpp_s"] = round(time.perf_counter() - start, 1)
    report["rows"] = [
        {"model": name, "held_out_items": s["n"], "call_name_accuracy": round(s["name_accuracy"], 3),
         "exact_argument_match": round(s["exact_match"], 3), "parse_failures": s["parse_failures"],
         "no_call": s["no_call"], "bfcl_simple_questions": b["per_category"]["simple"]["n"],
         "bfcl_simple_ast_accuracy": round(b["per_category"]["simple"]["accuracy"], 3),
         "bfcl_irrelevance_questions": b["per_category"]["irrelevance"]["n"],
         "bfcl_irrelevance_accuracy": round(b["per_category"]["irrelevance"]["accuracy"], 3)}
        for name, s, b in rows
    ]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print("| model | held-out items | call-name accuracy | exact argument match | parse failures | no call "
          "| BFCL simple (AST) | BFCL irrelevance |")
    print("|---|---|---|---|---|---|---|---|")
    for row in report["rows"]:
        print(f"| {row['model']} | {row['held_out_items']} | {row['call_name_accuracy']:.1%} | "
              f"{row['exact_argument_match']:.1%} | {row['parse_failures']} | {row['no_call']} | "
              f"{row['bfcl_simple_ast_accuracy']:.1%} of {row['bfcl_simple_questions']} | "
              f"{row['bfcl_irrelevance_accuracy']:.1%} of {row['bfcl_irrelevance_questions']} |")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()

"""Evaluate function calling call by call: exact match of function name and arguments.

    python evaluate.py --model_path MERGED --dataset Nexusflow/OTXAPIBenchmark --functions custom_function.txt
    python evaluate.py --model_path MERGED --dataset data/sample_heldout.jsonl
    python evaluate.py --predictions outputs/eval/predictions.jsonl   # re-score, no model

Predictions are written as JSONL while they are produced, so an interrupted run continues with
``--resume``; the summary is printed and written as JSON and Markdown beside them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from transformers import HfArgumentParser

from fcmistral.hardware import COMPUTE_DTYPE_CHOICES, COMPUTE_DTYPE_HELP, compute_dtype

from fcmistral.benchmarks import EvalItem, eval_items
from fcmistral.cli import UserError, run_cli
from fcmistral.data import load_rows
from fcmistral.functions import load_functions
from fcmistral.prompt import FunctionCall
from fcmistral.scoring import judge, summarize, summary_markdown

log = logging.getLogger("evaluate")


@dataclass
class EvalArguments:
    model_path: str = field(default=None, metadata={"help": "merged model folder or hub name (or the base, with --adapter_path)"})
    adapter_path: str = field(default=None, metadata={"help": "LoRA adapter folder to apply on --model_path"})
    dataset: str = field(
        default="data/sample_heldout.jsonl",
        metadata={"help": "evaluation rows: hub name (Nexusflow/OTXAPIBenchmark, ...) or local .json/.jsonl/.parquet"},
    )
    dataset_config: str = field(default=None, metadata={"help": "hub config, e.g. standardized_queries or raw_queries"})
    split: str = field(default="train", metadata={"help": "hub split to evaluate"})
    functions: str = field(
        default=None,
        metadata={"help": "function schemas for Nexusflow data: custom_function.txt style, a JSON list, OpenAI "
                          "tools, or standardized_api_list rows"},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "predictions.jsonl, summary.json, summary.md"})
    predictions: str = field(default=None, metadata={"help": "score this predictions file; no model is loaded"})
    batch_size: int = field(default=8, metadata={"help": "prompts generated together (left padding)"})
    max_new_tokens: int = field(default=400, metadata={"help": "tokens generated per prompt at most"})
    limit: int = field(default=None, metadata={"help": "evaluate only the first N items"})
    resume: bool = field(default=False, metadata={"help": "keep existing predictions and generate only the missing ones"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the model in 4-bit NF4"})
    compute_dtype: str = field(default="auto", metadata={"help": COMPUTE_DTYPE_HELP, "choices": COMPUTE_DTYPE_CHOICES})
    backend: str = field(
        default="auto",
        metadata={"help": "generation: hf (transformers), vllm (installed + GPU, a merged model), or auto "
                          "(vllm when usable and no --adapter_path, else hf)", "choices": ["auto", "hf", "vllm"]},
    )


def load_items(args: EvalArguments) -> list[EvalItem]:
    rows = load_rows(args.dataset, required=(), config=args.dataset_config, split=args.split)
    functions = load_functions(args.functions) if args.functions else None
    items, skipped = eval_items(rows, functions)
    if skipped:
        log.warning("%d of %d rows left out (first: row %d, %s)", len(skipped), len(rows), *skipped[0])
    if not items:
        raise UserError(f"{args.dataset!r} holds no row with a gold function call")
    return items[: args.limit] if args.limit else items


def read_predictions(path: Path) -> list[dict]:
    """Prediction records, one per query: a query written twice (a resumed run) counts once, last wins."""
    if not path.is_file():
        raise UserError(f"predictions file {str(path)!r} does not exist")
    records: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[record["query_id"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                if number > 1 and not line.endswith("\n"):  # the last line of an interrupted run
                    continue
                raise UserError(f"{str(path)!r} line {number} is not a prediction record") from None
    return list(records.values())


def make_generator(args: EvalArguments):
    """A function from prompts to replies, on the backend asked for (see --backend)."""
    from fcmistral.generation import VLLMGenerator, generate_batch, load_for_generation, vllm_usable

    backend = args.backend
    if backend == "auto":
        backend = "vllm" if vllm_usable() and not args.adapter_path else "hf"
    if backend == "vllm":
        if not vllm_usable():
            raise UserError("--backend vllm needs vLLM installed and a GPU")
        if args.adapter_path or args.load_in_4bit:
            raise UserError("--backend vllm takes a merged model: run convert_weights.py first")
        log.info("generating with vLLM")
        return VLLMGenerator(args.model_path, args.max_new_tokens)
    model, tokenizer = load_for_generation(args.model_path, args.adapter_path, args.load_in_4bit,
                                           compute_dtype(args.compute_dtype))
    return lambda prompts: generate_batch(model, tokenizer, prompts, args.max_new_tokens)


def generate_predictions(args: EvalArguments, items: list[EvalItem], path: Path) -> None:
    from fcmistral.generation import length_sorted_batches

    done = {r["query_id"] for r in read_predictions(path)} if args.resume and path.exists() else set()
    todo = [item for item in items if item.query_id not in done]
    if not todo:
        return
    generate = make_generator(args)
    with open(path, "a" if done else "w", encoding="utf-8") as out, tqdm(total=len(todo), desc="generating") as bar:
        for indices in length_sorted_batches([item.prompt for item in todo], args.batch_size):
            batch = [todo[i] for i in indices]
            outputs = generate([i.prompt for i in batch])
            for item, output in zip(batch, outputs):
                record = {"query_id": item.query_id, "query": item.query, "output": output,
                          "gold_call": {"name": item.gold.name, "arguments": item.gold.arguments}}
                record.update(judge(output, item.gold))
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))


def rescore(records: list[dict]) -> list[dict]:
    """Judge again from the raw outputs, so a scoring fix applies to old prediction files."""
    return [{**r, **judge(r["output"], FunctionCall(**r["gold_call"]))} for r in records]


def main() -> None:
    parser = HfArgumentParser(EvalArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses()
    if args.predictions:
        path = Path(args.predictions)
        out_dir = path.parent
    else:
        if not args.model_path:
            raise UserError("give --model_path (or --predictions to score an existing file)")
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "predictions.jsonl"
        generate_predictions(args, load_items(args), path)
    records = rescore(read_predictions(path))
    if not records:
        raise UserError(f"{str(path)!r} holds no predictions")
    summary = summarize(records)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    table = summary_markdown(summary)
    (out_dir / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    run_cli(main)

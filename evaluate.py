"""Evaluate function calling: call by call (exact match of name and arguments), or on BFCL.

    python evaluate.py --model_path MERGED --dataset Nexusflow/OTXAPIBenchmark --functions custom_function.txt
    python evaluate.py --model_path MERGED --dataset data/sample_heldout.jsonl
    python evaluate.py --model_path MERGED --benchmark bfcl --categories simple,irrelevance
    python evaluate.py --predictions outputs/eval/predictions.jsonl   # re-score, no model
    python evaluate.py --model_path MERGED --benchmark bfcl --constrained_calls --call_bias=-2,0,2

Predictions are written as JSONL while they are produced, so an interrupted run continues with
``--resume``; the summary is printed and written as JSON and Markdown beside them. With several
``--call_bias`` values, each has its own folder (``call_bias_+2`` ...) and ``call_bias.md`` sets
them side by side (BFCL: simple accuracy against irrelevance), to choose the trade-off from a table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fcmistral.arguments import (
    LOOP_PENALTY_HELP,
    MAJORITY_DECISIONS_HELP,
    ModelArguments,
    check_call_bias,
    check_loop_penalty,
    parse_arguments,
)
from fcmistral.cli import run_cli
from fcmistral.constraint import CallConstraint
from fcmistral.data.loading import load_rows
from fcmistral.errors import UserError, first_line
from fcmistral.evaluation.bfcl_data import DEFAULT_CATEGORIES, BFCLItem, load_bfcl_items, parse_categories
from fcmistral.evaluation.bfcl_scoring import bfcl_markdown, judge_bfcl, summarize_bfcl
from fcmistral.evaluation.items import EvalItem, eval_items
from fcmistral.evaluation.scoring import judge, summarize, summary_markdown
from fcmistral.format.grammar import call_grammar
from fcmistral.format.schemas import load_schemas
from fcmistral.hardware import compute_dtype
from fcmistral.inputs import read_utf8
from fcmistral.outputs import check_output_dir
from fcmistral.prompt import FunctionCall
from fcmistral.turns import replies

log = logging.getLogger("evaluate")


@dataclass
class EvalArguments:
    """This script's options; the model's are fcmistral.arguments.ModelArguments."""

    benchmark: str = field(default="calls", metadata={
        "help": "calls: exact match on --dataset rows; bfcl: the Berkeley Function Calling Leaderboard, scored "
                "by BFCL's AST checker", "choices": ["calls", "bfcl"]})
    categories: str = field(default=None, metadata={
        "help": f"BFCL categories, comma-separated (default: {DEFAULT_CATEGORIES}); also live_parallel, "
                "live_parallel_multiple, live_relevance"})
    bfcl_data: str = field(default=None, metadata={
        "help": "folder holding BFCL_v*_CATEGORY.json and possible_answer/ (default: the installed bfcl-eval, "
                "else nvidia-bfcl)"})
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
    limit: int = field(default=None, metadata={"help": "evaluate only the first N items (of each BFCL category)"})
    resume: bool = field(default=False, metadata={"help": "keep existing predictions and generate only the missing ones"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "write into an --output_dir that already holds files (its predictions and summary are replaced)"})
    constrained_calls: bool = field(default=False, metadata={
        "help": "constrain calls to the offered functions' schemas as they are generated (fcmistral.format.grammar)"})
    call_bias: str = field(default="0", metadata={
        "help": "added to the call marker's first logit where the reply starts (> 0 calls more often); a "
                "comma-separated list evaluates each value (hf backend)"})
    majority_decisions: bool = field(default=False, metadata={"help": MAJORITY_DECISIONS_HELP + " (hf backend)"})
    repetition_penalty: float = field(default=1.0, metadata={
        "help": "above 1: lowers the logits of tokens the reply has already written (transformers' repetition "
                "penalty over the reply only, not the prompt; hf backend)"})
    loop_penalty: float = field(default=0.0, metadata={"help": LOOP_PENALTY_HELP + " (hf backend)"})
    backend: str = field(
        default="auto",
        metadata={"help": "generation: hf (transformers), vllm (installed + GPU, a merged model), or auto "
                          "(vllm when usable and no --adapter_path, else hf)", "choices": ["auto", "hf", "vllm"]},
    )


def load_items(args: EvalArguments) -> list[EvalItem] | list[BFCLItem]:
    if args.benchmark == "bfcl":
        return load_bfcl_items(parse_categories(args.categories or DEFAULT_CATEGORIES), args.bfcl_data, args.limit)
    rows = load_rows(args.dataset, required=(), config=args.dataset_config, split=args.split)
    functions = load_schemas(args.functions) if args.functions else None
    items, skipped = eval_items(rows, functions)
    if skipped:
        log.warning("%d of %d rows left out (first: row %d, %s)", len(skipped), len(rows), *skipped[0])
    if not items:
        raise UserError(f"{args.dataset!r} holds no row to score (a gold function call, or functions offered and declined)")
    return items[: args.limit] if args.limit else items


def read_predictions(path: Path) -> list[dict]:
    """Prediction records, one per query: a query written twice (a resumed run) counts once, last wins."""
    records: dict[str, dict] = {}
    lines = read_utf8(path, "predictions file").split("\n")  # not splitlines(): records may hold U+2028
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[record["query_id"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            if number > 1 and number == len(lines):  # a last line without newline: an interrupted run
                continue
            raise UserError(f"{str(path)!r} line {number} is not a prediction record") from None
    return list(records.values())


def drop_torn_tail(path: Path) -> None:
    """Cut a partial last record (a run killed mid-write) off the file, so that a resumed run
    appends after the last complete line instead of onto the fragment."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            log.warning("dropped a partial record at the end of %s (%d bytes): it is generated again", path,
                        len(data) - keep)


def make_generator(args: EvalArguments, model_args: ModelArguments):
    """A function from prompts, their call constraints and a token limit (default: --max_new_tokens)
    to replies, on the backend asked for (see --backend)."""
    from fcmistral.generation import VLLMGenerator, generate_batch, load_for_generation, vllm_usable

    backend = args.backend
    if backend == "auto":
        backend = "vllm" if (vllm_usable() and not model_args.adapter_path and not any(call_biases(args))
                             and args.repetition_penalty == 1.0 and not args.loop_penalty
                             and not args.majority_decisions) else "hf"
    if backend == "vllm":
        if not vllm_usable():
            raise UserError("--backend vllm needs vLLM installed and a GPU")
        if model_args.adapter_path or model_args.load_in_4bit:
            raise UserError("--backend vllm takes a merged model: run convert_weights.py first")
        if any(call_biases(args)):
            raise UserError("--call_bias needs --backend hf (vLLM's logit_bias cannot apply at the reply's start only)")
        if args.repetition_penalty != 1.0:
            raise UserError("--repetition_penalty needs --backend hf (vLLM's counts the prompt's tokens too)")
        if args.loop_penalty:
            raise UserError("--loop_penalty needs --backend hf")
        if args.majority_decisions:
            raise UserError("--majority_decisions needs --backend hf (it reads each decision's probability)")
        log.info("generating with vLLM")
        return VLLMGenerator(model_args.model_path, args.max_new_tokens)
    model, tokenizer = load_for_generation(model_args.model_path, model_args.adapter_path, model_args.load_in_4bit,
                                           compute_dtype(model_args.compute_dtype, model_args.model_path))
    return lambda prompts, constraints, max_new_tokens=None: generate_batch(
        model, tokenizer, prompts, max_new_tokens or args.max_new_tokens, constraints=constraints,
        repetition_penalty=args.repetition_penalty, loop_penalty=args.loop_penalty)


def call_biases(args: EvalArguments) -> list[float]:
    try:
        values = [float(v) for v in args.call_bias.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise UserError(f"--call_bias takes numbers separated by commas, not {args.call_bias!r}")
    for value in values:
        check_call_bias(value)
    return values


def constraint_of(item: EvalItem | BFCLItem, args: EvalArguments, call_bias: float) -> CallConstraint | None:
    """The item's call constraint: its offered functions' grammar (--constrained_calls), the bias."""
    grammar = None
    if args.constrained_calls and item.schemas:
        try:
            grammar = call_grammar(item.schemas, "auto")
        except Exception as err:  # noqa: BLE001 - xgrammar's reasons vary; the user needs the item and the reason
            raise UserError(f"--constrained_calls: the functions of item {item.query_id!r} give no grammar: "
                            f"{first_line(err)}") from None
    return CallConstraint(grammar, call_bias, majority=args.majority_decisions) or None


def generate_predictions(args: EvalArguments, generate, items: list[EvalItem] | list[BFCLItem], path: Path,
                         call_bias: float = 0.0) -> None:
    from fcmistral.generation import length_sorted_batches

    done = set()
    if args.resume and path.exists():
        drop_torn_tail(path)
        done = {r["query_id"] for r in read_predictions(path)}
    todo = [item for item in items if item.query_id not in done]
    if not todo:
        return
    path.parent.mkdir(parents=True, exist_ok=True)  # only now: a bad input must leave no empty folder behind
    with open(path, "a" if done else "w", encoding="utf-8") as out, tqdm(total=len(todo), desc="generating") as bar:
        for indices in length_sorted_batches([item.prompt for item in todo], args.batch_size):
            batch = [todo[i] for i in indices]
            outputs = replies(generate, batch, [constraint_of(i, args, call_bias) for i in batch])
            for item, output in zip(batch, outputs):
                record = {"query_id": item.query_id, **item.record_fields(), "output": output}
                record.update(verdict(record))
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))


def verdict(record: dict) -> dict:
    """The verdict on a prediction record of either benchmark (BFCL records carry a category)."""
    if "category" in record:
        return judge_bfcl(record)
    gold = record["gold_call"]
    return judge(record["output"], FunctionCall(**gold) if gold else None)


def rescore(records: list[dict]) -> list[dict]:
    """Judge again from the raw outputs, so a scoring fix applies to old prediction files."""
    if len({"category" in r for r in records}) > 1:
        raise UserError("the predictions file mixes BFCL records with call-by-call records")
    return [{**r, **verdict(r)} for r in records]


def main() -> None:
    model_args, args = parse_arguments((ModelArguments, EvalArguments), __doc__.split("\n\n")[0],
                                       positive=("batch_size", "max_new_tokens", "limit", "repetition_penalty"))
    check_loop_penalty(args.loop_penalty)
    if args.benchmark != "bfcl" and (args.categories or args.bfcl_data):
        raise UserError("--categories and --bfcl_data choose BFCL questions: add --benchmark bfcl")
    if args.predictions:
        if model_args.model_path:
            raise UserError("--predictions scores an existing file and --model_path generates a new one: give one")
        print(score(Path(args.predictions)))
        return
    if not model_args.model_path:
        raise UserError("give --model_path (or --predictions to score an existing file)")
    biases = call_biases(args)
    out_dir = check_output_dir(args.output_dir, "--output_dir", args.resume or args.overwrite_output_dir,
                               "pass --resume to continue its predictions, or --overwrite_output_dir to "
                               "replace them")
    items = load_items(args)
    generate = make_generator(args, model_args)
    if len(biases) == 1:
        generate_predictions(args, generate, items, out_dir / "predictions.jsonl", biases[0])
        print(score(out_dir / "predictions.jsonl"))
        return
    summaries = {}
    for bias in biases:
        path = out_dir / f"call_bias_{bias:+g}" / "predictions.jsonl"
        generate_predictions(args, generate, items, path, bias)
        score(path)
        summaries[bias] = json.loads((path.parent / "summary.json").read_text())
    table = call_bias_markdown(summaries)
    (out_dir / "call_bias.md").write_text(table)
    print(table)


def score(path: Path) -> str:
    """Score a predictions file: summary.json and summary.md beside it; returns the Markdown."""
    records = rescore(read_predictions(path))
    if not records:
        raise UserError(f"{str(path)!r} holds no predictions")
    bfcl = "category" in records[0]
    summary = summarize_bfcl(records) if bfcl else summarize(records)
    (path.parent / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    table = bfcl_markdown(summary) if bfcl else summary_markdown(summary)
    (path.parent / "summary.md").write_text(table)
    return table


def call_bias_markdown(summaries: dict[float, dict]) -> str:
    """One row per call bias: BFCL's per-category accuracy (simple against irrelevance, where run),
    or the call-by-call exact match, name accuracy and counts of replies without a call or unreadable."""
    first = next(iter(summaries.values()))
    if "per_category" in first:
        categories = first["categories_run"]
        lines = ["| call_bias | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
        for bias, summary in summaries.items():
            cells = [f"{summary['per_category'][c]['accuracy']:.1%}" for c in categories]
            lines.append(f"| {bias:+g} | " + " | ".join(cells) + " |")
    else:
        lines = ["| call_bias | exact_match | name_accuracy | no call | unreadable |", "|---|---|---|---|---|"]
        for bias, s in summaries.items():
            lines.append(f"| {bias:+g} | {s['exact_match']:.1%} | {s['name_accuracy']:.1%} | {s['no_call']} | "
                         f"{s['parse_failures']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main)

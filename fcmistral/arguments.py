"""Command-line arguments shared by the scripts, and one parser that also reads a config file.

The scripts follow TRL's: a small dataclass of the script's own options beside the library's
(``TrainingArguments`` for train.py), parsed together by ``HfArgumentParser``. Options that mean
the same thing have the same name in every script, and each dataclass is declared once here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from transformers import HfArgumentParser

from fcmistral.errors import UserError, first_line
from fcmistral.hardware import COMPUTE_DTYPE_CHOICES, COMPUTE_DTYPE_HELP

# evaluate.py, inference.py and the server's option of the same name (fcmistral/call_loops.py).
MAJORITY_DECISIONS_HELP = (
    "call only where the call marker holds at least half the probability at the turn's start (after --call_bias), "
    "and write a second assistant turn only where the path to its tag holds at least half: each two-way decision "
    "by its probability, not by the likeliest single token (fcmistral/constraint.py)")
LOOP_PENALTY_HELP = ("above 0: lowers the tokens that would repeat a sequence already written inside the call, "
                     "ending its loops (DRY's multiplier, as llama.cpp's --dry-multiplier; 0.8 its suggested value; "
                     "fcmistral/call_loops.py)")


def check_loop_penalty(value: float) -> None:
    """``--loop_penalty``'s one check, for every script that takes it: NaN or inf would turn the
    lowered logits into NaN or -inf."""
    if not 0 <= value < math.inf:
        raise UserError("--loop_penalty must be 0 or above (a finite number)")


def check_call_bias(value: float) -> None:
    """``--call_bias``'s one check, for every script that takes it: NaN or inf added to the call
    marker's logit would make every reply's first step NaN or a certainty."""
    if not -math.inf < value < math.inf:
        raise UserError(f"--call_bias must be a finite number, not {value}")


def looks_local(path: str) -> bool:
    """Whether a model path is clearly a folder rather than a hub name: it starts with ``.``, ``/``
    or ``~``, or its parent folder exists here."""
    return path.startswith((".", "/", "~")) or (len(Path(path).parts) > 1 and Path(path).parent.is_dir())


def check_model_path(path: str | None, option: str = "--model_path") -> str | None:
    """``path`` with ``~`` expanded, refused at once when it cannot be a model: a file, or a
    clearly local folder that does not exist (``from_pretrained`` would try it as a hub name
    first: a minute of retries without network, then a message about repo ids)."""
    if not path:
        return path
    expanded = str(Path(path).expanduser())
    if Path(expanded).is_file():
        raise UserError(f"{option} {path!r} is a file: give the model's folder (or a hub name)")
    if looks_local(path) and not Path(expanded).exists():
        raise UserError(f"{option} {path!r}: no such folder")
    return expanded


def check_adapter_path(path: str | None, option: str = "--adapter_path") -> str | None:
    """``path`` with ``~`` expanded, refused unless it is a LoRA adapter folder (as train.py writes)."""
    if not path:
        return path
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{option} {path!r}: no such folder")
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{option} {path!r} is not a LoRA adapter folder (no adapter_config.json)") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{option} {path!r}: adapter_config.json is not valid JSON ({err})") from err
    if not isinstance(config, dict) or "peft_type" not in config:
        raise UserError(f"{option} {path!r}: adapter_config.json does not describe a PEFT adapter (no peft_type)")
    return str(folder)


def compute_dtype_field(choices: list[str] = COMPUTE_DTYPE_CHOICES, help: str = COMPUTE_DTYPE_HELP):
    """The ``--compute_dtype`` option, declared once for every script (FSDP/train.py narrows its choices)."""
    return field(default="auto", metadata={"help": help, "choices": choices})


@dataclass
class ModelArguments:
    """Which model to load for generation or merging, and how (inference.py, evaluate.py,
    convert_weights.py)."""

    model_path: str = field(default=None, metadata={"help": "merged model folder or hub name (or the base, with --adapter_path)"})
    adapter_path: str = field(default=None, metadata={"help": "LoRA adapter folder written by train.py, applied on --model_path"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the base model in 4-bit NF4, as QLoRA trained it"})
    compute_dtype: str = compute_dtype_field()

    def __post_init__(self) -> None:
        self.model_path = check_model_path(self.model_path)
        self.adapter_path = check_adapter_path(self.adapter_path)


@dataclass
class DataArguments:
    """The training data and how it is batched (train.py and FSDP/train.py)."""

    data_path: str = field(
        default="glaiveai/glaive-function-calling-v2",
        metadata={"help": "glaive data: hub dataset name or a local .json/.jsonl/.parquet file"},
    )
    max_length: int = field(default=4096, metadata={"help": "tokens per example at most"})
    test_size: float = field(default=0.02, metadata={"help": "fraction of rows held out as the dev set"})
    padding_free: bool = field(default=False, metadata={
        "help": "flatten each batch of examples into one sequence without padding (no attention across examples: "
                "FlashAttention-2 varlen when installed on a GPU, else SDPA per example); batches are drawn at "
                "random as padded ones are"})
    packing: bool = field(default=False, metadata={
        "help": "padding-free, and examples packed into fixed rows of up to max_length tokens (similar lengths "
                "together); the per-device batch size then counts packed rows"})
    irrelevance_rate: float = field(default=0.0, metadata={
        "help": "fraction of train rows with a call turned into a refusal: the called function removed from "
                "the system prompt, the call replaced by a refusal naming what is missing (fcmistral/data/augment.py)"})
    rename_rate: float = field(default=0.0, metadata={
        "help": "fraction of train rows whose functions and parameters are renamed to random identifiers in "
                "schemas and calls (descriptions kept)"})
    irrelevance_stand_in: bool = field(default=False, metadata={
        "help": "with --irrelevance_rate: where the called function was the only one offered, offer another "
                "row's function in its place rather than none, so the refusal is learnt with a function in view "
                "(as BFCL's irrelevance questions ask)"})
    shuffle_functions: bool = field(default=False, metadata={"help": "shuffle the offered functions of each train row"})
    parallel_rate: float = field(default=0.0, metadata={
        "help": "fraction of train rows with one call made parallel: the request lists two or three values for "
                "its function, or a second row's request joins it; the calls in one assistant turn (a call per "
                "line), a result per call, the answers"})
    decision_weight: float = field(default=1.0, metadata={
        "help": "weight in the training loss of each assistant turn's first token, where the model decides "
                "between calling a function and answering in words (1: a token like the others; "
                "fcmistral/data/labels.py)"})

    def __post_init__(self) -> None:
        for name in ("irrelevance_rate", "rename_rate", "parallel_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name} must be between 0 and 1")
        if self.irrelevance_stand_in and not self.irrelevance_rate:
            raise UserError("--irrelevance_stand_in needs --irrelevance_rate above 0 (it changes those rows only)")
        if not 0 < self.decision_weight < float("inf"):  # NaN fails both comparisons
            raise UserError("--decision_weight must be a finite number above 0")


CALL_METRICS = ("call_accuracy", "call_exact", "no_call_accuracy")  # fcmistral.evaluation.probes.call_metrics


@dataclass
class CallEvalArguments:
    """Calls scored at each evaluation, a metric to pick the checkpoint by (train.py and FSDP/train.py)."""

    call_eval_data: str = field(default=None, metadata={
        "help": "held-out glaive rows (file): at each evaluation, greedy replies to a fixed sample of their prompts "
                "are scored (eval_call_accuracy: the right call, or no call where the row declines; eval_call_exact, "
                "eval_no_call_accuracy), usable as --metric_for_best_model call_accuracy --greater_is_better true"})
    call_eval_limit: int = field(default=32, metadata={"help": "prompts of --call_eval_data scored at each evaluation"})
    call_eval_max_new_tokens: int = field(default=96, metadata={"help": "tokens per reply in --call_eval_data scoring"})

    def check_metric(self, metric_for_best_model: str, greater_is_better: bool) -> None:
        """A call metric as ``--metric_for_best_model`` needs its data, and higher is better."""
        metric = metric_for_best_model.removeprefix("eval_")
        if metric in CALL_METRICS:
            if not self.call_eval_data:
                raise UserError(f"--metric_for_best_model {metric} is computed from --call_eval_data: give that file")
            if not greater_is_better:
                raise UserError(f"--metric_for_best_model {metric}: higher is better; add --greater_is_better true")


@dataclass
class ConfigArguments:
    config: str = field(default=None, metadata={
        "help": "a YAML or JSON file of options (any option of this command, by name); options given on the "
                "command line override it"})


def read_config(path: str) -> dict[str, Any]:
    """The options in a YAML (.yaml/.yml) or JSON file, as a flat mapping."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path!r} does not exist")
    try:
        text = file.read_text(encoding="utf-8")
        config = yaml.safe_load(text) if file.suffix in (".yaml", ".yml") else json.loads(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise UserError(f"config file {path!r} cannot be read: {first_line(err)}") from err
    if not isinstance(config, dict):
        raise UserError(f"config file {path!r} must hold a mapping of option names to values")
    return config


def _usage_error(message: str) -> NoReturn:
    raise UserError(message)


def parse_arguments(types: tuple[type, ...], description: str, defaults: dict[str, Any] | None = None,
                    argv: list[str] | None = None, positive: tuple[str, ...] = ()) -> tuple:
    """Parse ``argv`` into one instance of each of ``types``.

    Precedence: the command line, then ``--config FILE``, then ``defaults`` (this script's own
    defaults where they differ from the dataclasses'), then the dataclasses' defaults. A value the
    dataclasses reject (``TrainingArguments`` checks many in its ``__post_init__``) is a one-line
    error, not a traceback. The options named in ``positive`` must be above 0 as given: they are
    checked before the dataclasses see them, because ``TrainingArguments`` quietly replaces an
    ``--eval_steps 0`` by another value.
    """
    parser = HfArgumentParser((*types, ConfigArguments), description=description)
    parser.error = _usage_error  # argparse's own complaints become the same one-line error
    options = {action.dest for action in parser._actions}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    config_path = pre.parse_known_args(argv)[0].config
    config = read_config(config_path) if config_path else {}
    unknown = sorted(set(config) - options)
    if unknown:
        raise UserError(f"config file {config_path!r}: unknown option(s) {', '.join(unknown)}")
    parser.set_defaults(**{**(defaults or {}), **config})
    namespace = vars(parser.parse_args(args=argv))
    for name in positive:
        if namespace.get(name) is not None and not 0 < namespace[name] < math.inf:  # NaN fails both
            raise UserError(f"--{name} must be above 0 and finite")
    try:  # what HfArgumentParser.parse_args_into_dataclasses does with the namespace
        return tuple(kind(**{f.name: namespace[f.name] for f in dataclasses.fields(kind) if f.init})
                     for kind in types)
    except ValueError as err:
        raise UserError(first_line(err)) from err

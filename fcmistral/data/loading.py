"""Loading glaive data (hub name or local file), the train/dev split and tokenization with labels."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, List, Value, load_dataset

from fcmistral.data.augment import Augmentation, augment_row
from fcmistral.data.encoding import SharedPrefixEncoder
from fcmistral.data.epochs import EpochDraws
from fcmistral.data.labels import DECISION, Example, Overflow, Skipped, decision_marks, examples_from_rows
from fcmistral.errors import UserError, first_line
from fcmistral.format.glaive import RowParseError, parse_row
from fcmistral.inputs import utf8_problem

log = logging.getLogger(__name__)
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
REQUIRED_COLUMNS = ("system", "chat")


def local_file_problem(path: Path) -> str | None:
    """What is wrong with a local JSON/JSONL data file, with its line number, or None.

    Only called once ``datasets`` has failed on the file: its own message ("An error occurred
    while generating the dataset") names neither the line nor the cause, and a validating pass
    over every file before loading would cost seconds on the full glaive data for nothing.
    """
    data = path.read_bytes()
    if not data.strip():
        return "the file is empty"
    text = data.decode("utf-8")  # checked before loading
    if path.suffix == ".json" and text.lstrip().startswith("["):
        lines = [text]
    else:  # JSON Lines (datasets reads a .json file that is not a list as JSON Lines too)
        lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        try:
            if line.strip():
                json.loads(line)
        except json.JSONDecodeError as err:
            where = err.lineno if len(lines) == 1 else number
            return f"line {where} is not valid JSON: {err.msg} (column {err.colno})"
    return None


def load_rows(
    data_path: str, required: tuple[str, ...] = REQUIRED_COLUMNS, config: str | None = None, split: str = "train"
) -> Dataset:
    """A hub dataset's split or a local JSON/JSONL/parquet file, checked for columns."""
    path = Path(data_path)
    try:
        if path.suffix in LOCAL_FORMATS:
            if not path.is_file():
                raise UserError(f"data file {data_path!r} does not exist")
            if path.suffix != ".parquet":  # pyarrow's JSON reader takes bad UTF-8 in and fails on first use
                problem = utf8_problem(path.read_bytes())  # the check: 0.14 s per 262 MB here
                if problem:
                    raise UserError(f"data file {data_path!r}: {problem}")
            ds = load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        else:
            ds = load_dataset(data_path, config, split=split)
    except UserError:
        raise
    except Exception as err:  # datasets raises many types (DatasetNotFoundError, ArrowInvalid...)
        problem = local_file_problem(path) if path.suffix in (".json", ".jsonl") else None
        raise UserError(f"cannot load data from {data_path!r}: {problem or first_line(err)}") from err
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise UserError(f"{data_path!r} has no {', '.join(missing)} column (columns: {ds.column_names})")
    if len(ds) == 0:
        raise UserError(f"{data_path!r} holds no rows")
    return ds


def split_rows(ds: Dataset, test_size: float, seed: int) -> DatasetDict:
    """Train/dev split of raw rows (0.02 with seed 42 gives 110,700 / 2,260 on the full glaive data)."""
    ds = ds.add_column("row_index", list(range(len(ds))))  # to name skipped rows after the shuffle
    try:
        return ds.train_test_split(test_size=test_size, seed=seed)
    except ValueError as err:  # too few rows for this test_size
        raise UserError(f"cannot split {len(ds)} rows with test_size {test_size}: {err}") from err


# Declared, so that datasets skips inferring the types of millions of ints (a third of its time).
TOKENIZED_FEATURES = Features({
    "input_ids": List(Value("int32")), "labels": List(Value("int32")), "prompt_tokens": Value("int32"),
    "skip_reason": Value("string"), "row_index": Value("int64"),
})
WITH_DECISIONS = Features({**TOKENIZED_FEATURES, DECISION: List(Value("int8"))})


def _tokenize_batch(
    systems: list[str], chats: list[str], row_index: list[int], encoder: SharedPrefixEncoder, max_length: int,
    overflow: Overflow, code: str, decisions: bool = False,
) -> dict[str, list]:
    """``code``: row_code_digest(), unused here but part of the cache key; ``decisions``: add the
    decision marks (fcmistral.data.labels)."""
    out: dict[str, list] = {"input_ids": [], "labels": [], "prompt_tokens": [], "skip_reason": [], "row_index": row_index}
    if decisions:
        out[DECISION] = []
    parsed, slots = [], []
    for system, chat in zip(systems, chats):
        try:
            parsed.append(parse_row({"system": system, "chat": chat}))
            slots.append(None)
        except RowParseError as err:
            slots.append(Skipped(f"unparseable: {err}"))
    results = iter(examples_from_rows(parsed, encoder.tokenizer, max_length, overflow, encoder)) if parsed else iter(())
    for slot in slots:
        result = next(results) if slot is None else slot
        kept = isinstance(result, Example)
        out["input_ids"].append(result.input_ids if kept else [])
        out["labels"].append(result.labels if kept else [])
        out["prompt_tokens"].append(result.prompt_tokens)
        out["skip_reason"].append("" if kept else result.reason)
        if decisions:
            out[DECISION].append(decision_marks(result) if kept else [])
    return out


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Tokenizing allocates millions of short-lived lists and creates no reference cycles, but each
    allocation burst triggers collections that walk every live object (the whole dataset's rows
    when they are in memory): a third of the time on 10k rows. Refcounting still frees everything."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def tokenize_rows(
    ds: Dataset, tokenizer, max_length: int, overflow: Overflow = "truncate", decisions: bool = False
) -> tuple[Dataset, list[tuple[int, str]], int]:
    """Tokenized examples, the ``(row_index, reason)`` of every skipped row, the longest prompt;
    with ``decisions``, each example's decision marks too (the ``decision`` column).

    A bad row never stops a 113k-row run: it is counted, reported and left out. The map is cached
    by ``datasets`` under a fingerprint of the data, the tokenizer and these settings.
    """
    if "row_index" not in ds.column_names:
        ds = ds.add_column("row_index", list(range(len(ds))))
    with _cyclic_gc_paused():
        mapped = ds.map(
            _tokenize_batch,
            batched=True,
            batch_size=1000,
            input_columns=["system", "chat", "row_index"],
            remove_columns=ds.column_names,
            features=WITH_DECISIONS if decisions else TOKENIZED_FEATURES,
            fn_kwargs={"encoder": SharedPrefixEncoder(tokenizer), "max_length": max_length, "overflow": overflow,
                       "code": row_code_digest(), "decisions": decisions},
            desc="tokenizing",
        )
    # One Arrow read per column (iterating a column object would build a Python row per value).
    summary = mapped.select_columns(["row_index", "skip_reason", "prompt_tokens"]).to_dict()
    skipped = [(i, r) for i, r in zip(summary["row_index"], summary["skip_reason"]) if r]
    longest_prompt = max(summary["prompt_tokens"], default=0)
    kept = mapped
    if skipped:
        kept = mapped.filter(lambda reasons: [not r for r in reasons], batched=True, batch_size=10_000,
                             input_columns="skip_reason", desc="dropping skipped rows")
    return kept.remove_columns(["skip_reason", "prompt_tokens"]), skipped, longest_prompt


def report_skipped(skipped: list[tuple[int, str]], total: int, where: str, path: Path | None = None) -> None:
    """Log a summary of skipped rows by reason (with the first indices) and write them all."""
    if not skipped:
        log.info("%s: all %d rows kept", where, total)
        return
    kind = lambda reason: reason.split(":")[0].split(" (")[0]  # noqa: E731 - reason without details
    by_kind = Counter(kind(reason) for _, reason in skipped)
    log.warning("%s: skipped %d of %d rows", where, len(skipped), total)
    for name, count in by_kind.most_common():
        first = [i for i, r in skipped if kind(r) == name][:5]
        log.warning("  %6d  %s (row indices %s ...)", count, name, first)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for index, reason in skipped:
                f.write(json.dumps({"row_index": index, "reason": reason}) + "\n")


def _augment_batch(batch: dict[str, list], augmentation: Augmentation, seed: str, code: str) -> dict[str, list]:
    """Augment a batch of rows, each its own draw; a parallel row's partner comes from the batch
    (``code``: row_code_digest(), unused here but part of the cache key)."""
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    augmented = [augment_row(row, row["row_index"], augmentation, seed, rows) for row in rows]
    return {column: [row[column] for row in augmented] for column in batch}


@lru_cache(maxsize=1)
def row_code_digest() -> str:
    """A digest of the source of every module that shapes a row's text, tokens or labels.

    Passed to the cached maps as an argument: ``datasets`` fingerprints a module's function by
    its name, not its code, so without it a new version of the format, the augmentation or the
    label mask would be served its predecessor's cached rows.
    """
    from fcmistral import prompt
    from fcmistral.data import augment, encoding, labels
    from fcmistral.format import calls, glaive

    digest = hashlib.sha256()
    for module in (prompt, glaive, calls, augment, encoding, labels, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _train_draw(rows: Dataset, tokenizer, max_length: int, overflow: Overflow, augmentation: Augmentation,
                seed: int, epoch: int, decisions: bool) -> tuple[Dataset, list[tuple[int, str]], int]:
    """The train rows as epoch ``epoch`` sees them: augmented with that epoch's draw, tokenized."""
    if augmentation:
        draw_seed = str(seed) if epoch == 0 else f"{seed}.{epoch}"  # epoch 0: the draw of single-draw runs
        rows = rows.map(_augment_batch, batched=True, batch_size=1000, desc=f"augmenting (epoch {epoch})", fn_kwargs={
            "augmentation": augmentation, "seed": draw_seed, "code": row_code_digest()})
    return tokenize_rows(rows, tokenizer, max_length, overflow, decisions)


def prepare_splits(
    data_path: str, tokenizer, max_length: int, test_size: float, seed: int, overflow: Overflow = "truncate",
    report_dir: Path | None = None, report: bool = True, augmentation: Augmentation = Augmentation(),
    decisions: bool = False,
) -> tuple[Dataset | EpochDraws, Dataset]:
    """Train and dev examples from raw rows: load, split, augment the train rows, tokenize, report what
    was skipped.

    Shared by train.py and FSDP/train.py (``report=False`` on all ranks but the first). With an
    augmentation, the train examples are an ``EpochDraws``: each epoch augments the rows with its own
    draw (fcmistral/data/epochs.py); the dev rows stay as they are, so the dev loss stays comparable
    across epochs and runs. With ``decisions``, the train examples carry their decision marks
    (``--decision_weight``); the dev examples never do, so the dev loss stays the plain one. Refuses a
    ``max_length`` that cannot hold the longest system prompt, and a split left empty.
    """
    splits = split_rows(load_rows(data_path), test_size, seed)
    if report:
        log.info("split: %d train / %d dev rows", len(splits["train"]), len(splits["test"]))
        if augmentation:
            log.info("augmentation: %s, a new draw each epoch", augmentation)
    tokenized = {"train": _train_draw(splits["train"], tokenizer, max_length, overflow, augmentation, seed, 0,
                                      decisions),
                 "dev": tokenize_rows(splits["test"], tokenizer, max_length, overflow)}
    longest_prompt = max(longest for _, _, longest in tokenized.values())
    if longest_prompt >= max_length:
        raise UserError(f"--max_length {max_length} is smaller than the longest system prompt ({longest_prompt} tokens)")
    for name, (ds, skipped, _) in tokenized.items():
        if report:
            path = report_dir / f"skipped_{name}.jsonl" if report_dir is not None else None
            report_skipped(skipped, len(ds) + len(skipped), name, path)
        if len(ds) == 0:
            raise UserError(f"no {name} example left after filtering {data_path!r} (see the skipped rows above)")
    train = tokenized["train"][0].remove_columns("row_index")
    if augmentation:
        first = train

        def make(epoch: int) -> Dataset:
            if epoch == 0:
                return first
            draw, _, _ = _train_draw(splits["train"], tokenizer, max_length, overflow, augmentation, seed, epoch,
                                     decisions)
            return draw.remove_columns("row_index")

        train = EpochDraws(make, seed)
    return train, tokenized["dev"][0].remove_columns("row_index")

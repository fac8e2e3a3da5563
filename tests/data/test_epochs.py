"""Each epoch trains on its own augmentation draw (fcmistral/data/epochs.py), in both loops' terms:
the same length every epoch, reproducible, and switched by the Trainer before an epoch's first batch."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from fcmistral.data.augment import Augmentation
from fcmistral.data.epochs import EpochDraws
from fcmistral.data.loading import prepare_splits
from fcmistral.data.packing import pack_examples
from fcmistral.training.callbacks import EpochDrawCallback
from tests.conftest import REPO

DATA = str(REPO / "data" / "sample_train.jsonl")


def texts(draws: EpochDraws, tokenizer) -> list[str]:
    return [tokenizer.decode(draws[i]["input_ids"]) for i in range(len(draws))]


def test_each_epoch_has_its_own_reproducible_draw(tiny_tokenizer):
    renames = Augmentation(rename_rate=1.0)
    train, _ = prepare_splits(DATA, tiny_tokenizer, 1024, 0.1, 3, report=False, augmentation=renames)
    first = texts(train, tiny_tokenizer)
    train.set_epoch(1)
    second = texts(train, tiny_tokenizer)
    assert len(second) == len(first)
    offering = sum('"name"' in text.split("USER:")[0] for text in first)
    assert sum(a != b for a, b in zip(first, second)) == offering > 0.8 * len(first)  # each renamed anew
    again, _ = prepare_splits(DATA, tiny_tokenizer, 1024, 0.1, 3, report=False, augmentation=renames)
    again.set_epoch(1)
    assert texts(again, tiny_tokenizer) == second
    train.set_epoch(0)
    assert texts(train, tiny_tokenizer) == first


def test_packed_draws_keep_the_first_draws_length(tiny_tokenizer):
    """Irrelevance rows are shorter, so each draw packs into its own number of rows; every epoch still
    has draw 0's length (the Trainer and the schedule count steps once), and its rows come from its own
    draw."""
    declines = Augmentation(irrelevance_rate=0.5)
    train, _ = prepare_splits(DATA, tiny_tokenizer, 1024, 0.1, 3, report=False, augmentation=declines)
    packed = train.then(lambda draw: pack_examples(draw, 256))
    lengths = {epoch: len(packed.make(epoch)) for epoch in range(4)}
    assert len(set(lengths.values())) > 1  # the case this guards
    for epoch in range(4):
        packed.set_epoch(epoch)
        rows = {tuple(packed[i]["input_ids"]) for i in range(len(packed))}
        assert len(packed) == lengths[0]
        assert rows <= {tuple(ids) for ids in packed.make(epoch)["input_ids"]}


def test_the_trainer_reads_each_epoch_from_its_draw(tiny_model_dir, tmp_path):
    """Through accelerate's prepared loader (whose set_epoch reaches its sampler, not the dataset):
    every batch of epoch e comes from draw e."""
    def make(epoch: int) -> Dataset:
        return Dataset.from_dict({"input_ids": [[1, 10 + epoch, 5 + i] for i in range(8)]})

    seen: list[int] = []

    def collate(rows: list[dict]) -> dict:
        seen.extend(row["input_ids"][1] - 10 for row in rows)
        ids = torch.tensor([row["input_ids"] for row in rows])
        return {"input_ids": ids, "labels": ids}

    draws = EpochDraws(make, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args, train_dataset=draws,
                      data_collator=collate, callbacks=[EpochDrawCallback(draws)])
    trainer.train()
    assert seen == [0] * 8 + [1] * 8 + [2] * 8

"""One parser for every script: Trainer options in train.py, a config file that the command line
overrides, shared names between the training scripts, and one-line errors."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from fcmistral.arguments import DataArguments, ModelArguments, parse_arguments
from fcmistral.errors import UserError
from tests.conftest import REPO


def test_config_file_then_command_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("max_length: 1024\npadding_free: true\ncompute_dtype: fp32\n")
    model, data = parse_arguments((ModelArguments, DataArguments), "t", defaults={"test_size": 0.05},
                                  argv=["--config", str(config), "--max_length", "512"])
    assert data.max_length == 512 and data.padding_free and data.test_size == 0.05
    assert model.compute_dtype == "fp32"


@pytest.mark.parametrize("text, message", [
    ("bogus_option: 1\n", "unknown option(s) bogus_option"),
    ("- a list\n", "must hold a mapping"),
    ("max_length: [\n", "cannot be read"),
])
def test_bad_config_is_a_one_line_error(text, message, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_arguments((DataArguments,), "t", argv=["--config", str(config)])


def test_train_py_takes_every_trainer_option_and_the_demo_config():
    import train

    script, data, _, training = train.parse_all(["--config", str(REPO / "configs" / "demo_qlora.yaml"),
                                                 "--optim", "adafactor", "--gradient_checkpointing", "true"])
    assert training.optim.value == "adafactor" and training.activation_checkpointing  # the old name still counts
    assert data.padding_free and training.per_device_train_batch_size == 8 and training.learning_rate == 0.003
    assert training.lr_scheduler_type == "cosine" and training.load_best_model_at_end  # this project's defaults
    with pytest.raises(UserError, match="--max_length must be at least 16"):
        train.parse_all(["--max_length", "8"])


def test_train_py_says_load_in_4bit_as_every_script_does_and_keeps_the_old_spelling():
    import train

    assert train.parse_all([])[0].load_in_4bit  # QLoRA by default
    assert not train.parse_all(["--load_in_4bit", "false"])[0].load_in_4bit
    assert not train.parse_all(["--no_4bit"])[0].load_in_4bit  # the hidden alias (it warns)
    assert "load_in_4bit" in {f.name for f in dataclasses.fields(ModelArguments)}


def test_the_training_scripts_name_the_same_concepts_alike():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fsdp_train", REPO / "FSDP" / "train.py")
    fsdp_train = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fsdp_train  # dataclasses resolve their module's annotations through it
    spec.loader.exec_module(fsdp_train)
    from transformers import TrainingArguments

    trainer_names = {f.name for f in dataclasses.fields(TrainingArguments)}
    fsdp_names = {f.name for f in dataclasses.fields(fsdp_train.FullFinetuneArguments)}
    # The rest are the Trainer's names; overwrite_output_dir is the one transformers 4 users know
    # (transformers 5 dropped it), which train.py declares too.
    assert fsdp_names - trainer_names == {"model_path", "compute_dtype", "overwrite_output_dir"}
    import train

    assert "overwrite_output_dir" in {f.name for f in dataclasses.fields(train.QLoRAArguments)}

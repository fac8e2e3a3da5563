"""train.py end to end on the tiny model: it trains, keeps the best adapter, resumes, and
refuses bad input with one clear line."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fcmistral.chat_template import chat_template
from tests.conftest import REPO
from tests.conftest import run_script as run

FAST = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--gradient_accumulation_steps", "1",
        "--learning_rate", "3e-3", "--gradient_checkpointing", "false", "--report_to", "none", "--test_size", "0.1",
        "--logging_steps", "2"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, sample_rows) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample_rows[:120]))
    return path


@pytest.mark.slow
def test_train_keeps_best_adapter_with_tokenizer_and_resumes(tiny_model_dir, small_data, tmp_path):
    out = tmp_path / "run"
    common = ["--model_path", str(tiny_model_dir), "--data_path", str(small_data), "--output_dir", str(out),
              "--eval_steps", "4", "--save_steps", "4", *FAST]
    first = run("train.py", *common, "--max_steps", "8", "--eval_on_start", "true")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    losses = [h["eval_loss"] for h in summary["eval_history"]]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5
    assert summary["best_eval_loss"] == min(losses)
    assert summary["best_checkpoint"].endswith(f"checkpoint-{4 * losses.index(min(losses))}")
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert (out / "chat_template.jinja").read_text() == chat_template()  # apply_chat_template renders glaive
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)

    # A run killed while saving checkpoint-10: its adapter is written, its trainer_state.json is not.
    torn = out / "checkpoint-10"
    torn.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (torn / name).write_bytes((out / "checkpoint-8" / name).read_bytes())
    resumed = run("train.py", *common, "--max_steps", "12", "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping" in resumed.stderr and "checkpoint-10: incomplete" in resumed.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 12
    steps = [h["step"] for h in summary["eval_history"]]
    assert steps == [0, 4, 8, 12]  # the history of the first run was restored, not restarted


@pytest.mark.slow
def test_checkpoint_picked_by_call_accuracy(tiny_model_dir, small_data, tmp_path):
    """--call_eval_data: each evaluation logs the call metrics beside eval_loss, and the adapter kept is the
    checkpoint with the highest call accuracy (the first of equals), not the lowest loss."""
    out = tmp_path / "run"
    result = run("train.py", "--model_path", str(tiny_model_dir), "--data_path", str(small_data), "--output_dir", str(out),
                 "--eval_steps", "3", "--save_steps", "3", "--max_steps", "9", *FAST, "--call_eval_limit", "8",
                 "--call_eval_data", str(REPO / "data" / "sample_heldout.jsonl"), "--call_eval_max_new_tokens", "32",
                 "--metric_for_best_model", "call_accuracy", "--greater_is_better", "true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "call scoring at each evaluation: 8 held-out prompts" in result.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    history = summary["eval_history"]
    assert [h["step"] for h in history] == [3, 6, 9]
    assert all(0 <= h[k] <= 1 for h in history for k in ("eval_call_accuracy", "eval_call_exact", "eval_no_call_accuracy"))
    accuracies = [h["eval_call_accuracy"] for h in history]
    assert summary["metric_for_best_model"] == "call_accuracy" and summary["best_metric"] == max(accuracies)
    assert summary["best_checkpoint"].endswith(f"checkpoint-{3 * (1 + accuracies.index(max(accuracies)))}")
    assert summary["best_eval_loss"] == min(h["eval_loss"] for h in history)


def _logged_losses(checkpoint: Path) -> dict[int, tuple[float, float]]:
    """Step -> (training loss, gradient norm) at full precision, from a checkpoint's trainer state."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: (h["loss"], h["grad_norm"]) for h in history if "loss" in h}


@pytest.mark.slow
def test_same_seed_same_curve_and_resume_reproduces_it(tiny_model_dir, small_data, tmp_path):
    """Two fresh runs with one seed give the same losses and gradient norms, bit for bit (one thread,
    one machine); a run resumed from its middle checkpoint continues the same curve. (LoRA's A
    matrices used to be drawn before the Trainer seeded: the norms differed from step 1.)"""
    def train(out: Path, *extra: str) -> dict[int, tuple[float, float]]:
        result = run("train.py", "--model_path", str(tiny_model_dir), "--data_path", str(small_data), "--output_dir",
                     str(out), "--max_steps", "8", "--eval_steps", "4", "--save_steps", "4", *FAST,
                     "--logging_steps", "1", *extra, env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        return _logged_losses(out / "checkpoint-8")

    first = train(tmp_path / "a")
    assert sorted(first) == list(range(1, 9))
    assert train(tmp_path / "b") == first
    for name in ("checkpoint-8", "adapter_model.safetensors", "train_summary.json"):  # b as if killed after step 4
        path = tmp_path / "b" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert train(tmp_path / "b", "--resume_from_checkpoint", "last") == first


# A few cases run train.py as a user does, in a process of its own; the others run its main() through
# the same runner (fcmistral.cli.run_cli) in this process: the same code, without the 10 s a fresh
# Python spends importing torch and transformers (19 processes took ~3 minutes of the suite).
# (A broken JSON line is one of them: `datasets` logs that error through a handler it bound to the
# stderr of the first test that imported it, which pytest has closed since.)
IN_A_PROCESS_OF_ITS_OWN = ({"--model_path": "no/such-model-folder"}, {"--data_path": "LATIN1"},
                           {"--lr_scheduler_type": "bogus"}, {"--data_path": "BROKEN_LINE"})


def run_main_in_this_process(script: str, args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``python SCRIPT ARGS`` run in this process: (exit code, stderr)."""
    import importlib.util

    from fcmistral.cli import run_cli

    spec = importlib.util.spec_from_file_location(f"_script_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *args])
    # run_cli's logging.basicConfig then writes to this test's captured stderr, not an earlier one's.
    monkeypatch.setattr(logging.root, "handlers", [])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_cli(module.main)
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model_path": "no/such-model-folder"}, "cannot load the tokenizer"),
        ({"--data_path": "missing.jsonl"}, "does not exist"),
        ({"--data_path": "WRONG_COLUMNS"}, "has no system, chat column"),
        ({"--data_path": "NO_ASSISTANT"}, "no train example left"),
        ({"--max_length": "100"}, "smaller than the longest system prompt"),
        ({"--data_path": "ONE_ROW"}, "cannot split 1 rows"),
        ({"--resume_from_checkpoint": "nowhere"}, "does not exist"),
        ({"--eval_steps": "0"}, "--eval_steps must be above 0"),  # used to train, evaluating every 10 steps
        ({"--gradient_accumulation_steps": "0"}, "--gradient_accumulation_steps must be above 0"),
        ({"--per_device_train_batch_size": "0"}, "--per_device_train_batch_size must be above 0"),
        ({"--lora_r": "0"}, "--lora_r must be above 0"),
        ({"--irrelevance_rate": "1.5"}, "--irrelevance_rate must be between 0 and 1"),
        ({"--irrelevance_stand_in": "true"}, "--irrelevance_stand_in needs --irrelevance_rate above 0"),
        ({"--decision_weight": "0"}, "--decision_weight must be a finite number above 0"),
        ({"--decision_weight": "inf"}, "--decision_weight must be a finite number above 0"),
        ({"--lr_scheduler_type": "bogus"}, "invalid choice: 'bogus'"),
        ({"--report_to": "bogus"}, "--report_to bogus: choose from"),
        ({"--output_dir": "A_FILE"}, "is a file, not a folder"),
        ({"--data_path": "EMPTY"}, "the file is empty"),
        ({"--data_path": "LATIN1"}, "line 2 is not UTF-8 text (byte 0xe9 at column 16)"),
        ({"--data_path": "BROKEN_LINE"}, "line 3 is not valid JSON: Expecting ',' delimiter"),
        ({"--model_path": "A_FILE"}, "is a file: give the model's folder"),
        ({"--model_path": "./no/such/model"}, "no such folder"),
        ({"--metric_for_best_model": "call_accuracy"}, "is computed from --call_eval_data: give that file"),
        ({"--metric_for_best_model": "eval_call_exact", "--call_eval_data": "HELDOUT"},
         "higher is better; add --greater_is_better true"),
    ],
)
def test_bad_input_gives_one_clear_error(change, message, tiny_model_dir, small_data, tmp_path, capsys, monkeypatch):
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"prompt": "a", "answer": "b"}\n')
    no_assistant = tmp_path / "no_assistant.jsonl"
    no_assistant.write_text((json.dumps({"system": "SYSTEM: You are a helpful assistant, with no access to "
                                        "external functions.\n\n", "chat": "USER: hi\n\n\n"}) + "\n") * 60)
    args = {"--model_path": str(tiny_model_dir), "--data_path": str(small_data), "--output_dir": str(tmp_path / "o"),
            "--max_steps": "1"}
    args.update(change)
    one_row = tmp_path / "one.jsonl"
    one_row.write_text(small_data.read_text().splitlines(keepends=True)[0])
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "empty.jsonl").write_text("\n")
    rows = small_data.read_text().splitlines(keepends=True)
    (tmp_path / "latin1.jsonl").write_bytes(rows[0].encode() + b'{"system": "caf\xe9", "chat": ""}\n')
    (tmp_path / "broken.jsonl").write_text(rows[0] + rows[1] + '{"system": "a" "chat": "b"}\n' + rows[2])
    named = {"WRONG_COLUMNS": wrong, "NO_ASSISTANT": no_assistant, "ONE_ROW": one_row, "A_FILE": a_file,
             "EMPTY": tmp_path / "empty.jsonl", "LATIN1": tmp_path / "latin1.jsonl", "BROKEN_LINE": tmp_path / "broken.jsonl",
             "HELDOUT": REPO / "data" / "sample_heldout.jsonl"}
    args = [x for kv in {option: str(named.get(value, value)) for option, value in args.items()}.items() for x in kv]
    if change in IN_A_PROCESS_OF_ITS_OWN:
        result = run("train.py", *args)
        code, stderr = result.returncode, result.stderr
    else:
        code, stderr = run_main_in_this_process("train.py", args, capsys, monkeypatch)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_as_interrupted(signum, tiny_model_dir, small_data, tmp_path):
    out = tmp_path / "interrupted"
    cmd = [sys.executable, str(REPO / "train.py"), "--model_path", str(tiny_model_dir), "--data_path",
           str(small_data), "--output_dir", str(out), "--eval_steps", "100", "--save_steps", "100",
           "--max_steps", "400", *FAST]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    for line in process.stdout:  # the Trainer's first logged loss (tqdm.write, stdout): training is under way
        if "'loss'" in line:
            process.send_signal(signum)
            break
    output = process.stdout.read()
    assert "stop requested" in output and "interrupted after step" in output
    assert process.wait(timeout=300) == 128 + signum  # 130 for Ctrl-C, 143 for SIGTERM: not a finished run
    assert not (out / "train_summary.json").exists() and not (out / "adapter_model.safetensors").exists()
    (checkpoint,) = out.glob("checkpoint-*")
    step = int(checkpoint.name.split("-")[1])
    assert 1 <= step < 100  # saved where it stopped, not at a scheduled save
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "trainer_state.json").is_file()
    resumed = run("train.py", *cmd[2:8], "--eval_steps", "100", "--save_steps", "100", "--max_steps", str(step + 2),
                  "--resume_from_checkpoint", "last", *FAST)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == step + 2


@pytest.mark.slow
@pytest.mark.parametrize("mode, logged", [("--packing", "packing: "), ("--padding_free", "padding-free: 108 examples")])
def test_train_padding_free_and_packed(mode, logged, tiny_model_dir, small_data, tmp_path):
    """Packed with the decisions weighed (the Trainer's own loss then replaced), padding-free without."""
    out = tmp_path / "packed"
    weighed = ["--decision_weight", "5"] if mode == "--packing" else []
    result = run("train.py", "--model_path", str(tiny_model_dir), "--data_path", str(small_data), "--output_dir",
                 str(out), "--eval_steps", "3", "--save_steps", "3", "--max_steps", "6", mode, "true",
                 "--max_length", "1024", "--eval_on_start", "true", *weighed, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert logged in result.stderr and "sdpa_varlen attention" in result.stderr  # no GPU here
    losses = [h["eval_loss"] for h in json.loads((out / "train_summary.json").read_text())["eval_history"]]
    assert losses[-1] < losses[0] - 0.5


def test_help_lists_every_option_with_its_default():
    result = run("train.py", "--help")
    assert result.returncode == 0
    for option in ("--model_path", "--data_path", "--max_length", "--test_size", "--lora_r", "--load_in_4bit",
                   "--resume_from_checkpoint", "--eval_steps", "--learning_rate"):
        assert option in result.stdout
    text = " ".join(result.stdout.split())
    assert "(default: mistralai/Mistral-7B-v0.1)" in text and "(default: 0.02)" in text


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_an_output_folder_holding_a_run_is_never_written_without_being_asked(script, tiny_model_dir, small_data,
                                                                               tmp_path):
    old = tmp_path / "old_run"
    (old / "checkpoint-10").mkdir(parents=True)
    (old / "adapter_model.safetensors").write_bytes(b"a better adapter")
    (old / "predictions.jsonl").write_text('{"query_id": "1"}\n')
    before = {p: p.stat().st_mtime_ns for p in old.rglob("*")}
    args = {"train.py": ["--model_path", str(tiny_model_dir), "--data_path", str(small_data), "--max_steps", "2"],
            "evaluate.py": ["--model_path", str(tiny_model_dir), "--limit", "3"]}[script]
    result = run(script, *args, "--output_dir", str(old))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds files" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in old.rglob("*")} == before
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    result = run(script, *args, "--output_dir", str(a_file))
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr


@pytest.mark.parametrize("option, value", [("--batch_size", "0"), ("--max_new_tokens", "0"), ("--limit", "-1")])
def test_evaluate_refuses_impossible_settings_before_writing(option, value, tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    result = run("evaluate.py", "--model_path", str(tiny_model_dir), "--output_dir", str(out), option, value)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(f"error: {option}")
    assert not out.exists()  # nothing half-written

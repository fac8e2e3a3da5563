"""FSDP/train.py under torchrun on CPU (gloo) with the tiny model: it learns, saves loadable
folders, matches a 1-process run with the same global batch, and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def torchrun_cmd(processes: int, output_dir: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            str(REPO / "FSDP" / "train.py"), "--model_path", str(model), "--data_path", str(data),
            "--output_dir", str(output_dir), "--test_size", "0.1", "--learning_rate", "1e-3",
            "--compute_dtype", "fp32", "--max_steps", "16", "--eval_steps", "4", "--save_steps", "2",
            "--activation_checkpointing", "false", *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_rows) -> Path:
    path = tmp_path_factory.mktemp("fsdp-data") / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample_rows[:100]))
    return path


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_model_dir, data) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "two"
    run(torchrun_cmd(2, out, tiny_model_dir, data, "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2"))
    return out


def test_two_processes_learn_and_save_loadable_folders(two_process_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = metrics(two_process_run)
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(losses) == 16 and len(evals) == 4
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0
    assert evals[-1] < evals[0]
    best = AutoModelForCausalLM.from_pretrained(two_process_run / "best")
    AutoTokenizer.from_pretrained(two_process_run / "best")
    assert json.loads((two_process_run / "summary.json").read_text())["best_eval_loss"] == pytest.approx(min(evals))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in best.state_dict().items() if not (p == base.state_dict()[n]).all()]
    assert any("embed_tokens" in n for n in changed) and any("layers.0.mlp" in n for n in changed)


def test_one_process_with_the_same_global_batch_follows_the_same_curve(two_process_run, tiny_model_dir, data, tmp_path):
    out = tmp_path / "one"
    run(torchrun_cmd(1, out, tiny_model_dir, data, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"))
    two, one = metrics(two_process_run), metrics(out)
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(two, one):
        for key in ("loss", "eval_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4), (a, b)


def test_killed_run_resumes_to_the_same_curve(two_process_run, tiny_model_dir, data, tmp_path):
    out = tmp_path / "killed"
    cmd = torchrun_cmd(2, out, tiny_model_dir, data, "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2")
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    step_file = out / "checkpoints" / "latest.json"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if step_file.exists() and json.loads(step_file.read_text())["step"] >= 4:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode != 0, "the run ended before it could be killed"
    killed_at = json.loads(step_file.read_text())["step"]
    assert 4 <= killed_at < 16
    run(cmd + ["--resume_from_checkpoint", "last"])
    reference, resumed = metrics(two_process_run), metrics(out)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for a, b in zip(reference, resumed):
        for key in ("loss", "eval_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (killed_at, a, b)


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(two_process_run, tiny_model_dir, data):
    before = {p: p.stat().st_mtime_ns for p in two_process_run.rglob("*")}
    result = subprocess.run(torchrun_cmd(2, two_process_run, tiny_model_dir, data), capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode != 0 and "already holds files" in result.stderr
    assert "--overwrite_output_dir" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in two_process_run.rglob("*")} == before  # best/ and metrics kept


def test_best_folder_picked_by_call_accuracy_on_two_processes(tiny_model_dir, data, tmp_path):
    """--call_eval_data as in train.py: both processes generate the probes' replies in step (a sharded
    model's forwards are collective: a process left waiting would hang the run), each evaluation logs
    the call metrics beside eval_loss, and best/ is the step with the highest call accuracy (the first
    of equals), not the lowest loss."""
    out = tmp_path / "calls"
    result = run(torchrun_cmd(2, out, tiny_model_dir, data, "--gradient_accumulation_steps", "2",
                              "--call_eval_data", str(REPO / "data" / "sample_heldout.jsonl"), "--call_eval_limit", "6",
                              "--call_eval_max_new_tokens", "24", "--metric_for_best_model", "call_accuracy",
                              "--greater_is_better", "true"))
    assert result.stderr.count("call scoring at each evaluation: 6 held-out prompts") == 1  # logged by rank 0
    evals = [r for r in metrics(out) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8, 12, 16]
    assert all(0 <= r[k] <= 1 for r in evals for k in ("eval_call_accuracy", "eval_call_exact", "eval_no_call_accuracy"))
    accuracies = [r["eval_call_accuracy"] for r in evals]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric_for_best_model"] == "eval_call_accuracy" and summary["best_metric"] == max(accuracies)
    assert summary["best_step"] == evals[accuracies.index(max(accuracies))]["step"]
    assert summary["best_eval_loss"] == pytest.approx(min(r["eval_loss"] for r in evals))


@pytest.mark.parametrize("change, message", [
    (("--metric_for_best_model", "call_accuracy", "--greater_is_better", "true"),
     "is computed from --call_eval_data: give that file"),
    (("--metric_for_best_model", "call_exact", "--call_eval_data", str(REPO / "data" / "sample_heldout.jsonl")),
     "higher is better; add --greater_is_better true"),
    (("--metric_for_best_model", "accuracy"), "--metric_for_best_model eval_accuracy: choose from loss, call_accuracy"),
])
def test_a_metric_it_cannot_compute_is_a_clear_error(change, message, tiny_model_dir, data, tmp_path):
    result = subprocess.run(torchrun_cmd(1, tmp_path / "out", tiny_model_dir, data, *change), capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode != 0 and "error: --metric_for_best_model" in result.stderr, result.stderr[-2000:]
    assert message in result.stderr and not (tmp_path / "out").exists()


def test_resume_without_checkpoint_is_a_clear_error(tiny_model_dir, data, tmp_path):
    result = subprocess.run(torchrun_cmd(1, tmp_path / "none", tiny_model_dir, data, "--resume_from_checkpoint", "last"),
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode != 0 and "error: --resume_from_checkpoint last: no checkpoint" in result.stderr
    # torchrun adds its own report (with its launcher's traceback); none goes through our code.
    assert "FSDP/train.py\", line" not in result.stderr and "fcmistral/" not in result.stderr


def test_a_model_rank_0_cannot_load_is_a_clear_error_on_every_rank(tiny_model_dir, data, tmp_path):
    """Only rank 0 reads the weights: the others must be told of its failure, not wait for them."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())  # no weights
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_text((tiny_model_dir / name).read_text())
    result = subprocess.run(torchrun_cmd(2, tmp_path / "out", broken, data), capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.count("error: cannot load the model") == 2, result.stderr[-3000:]


def test_a_model_with_tied_embeddings_stays_tied(tiny_model_dir, data, tmp_path):
    """Tied models take the every-rank loading path (assigning shards key by key would untie them)."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tied_dir = tmp_path / "tied"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tied_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied_dir)
    out = tmp_path / "out"
    run(torchrun_cmd(2, out, tied_dir, data, "--max_steps", "3"))  # the last --max_steps counts
    with safe_open(out / "final" / "model.safetensors", "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    embed = saved["model.embed_tokens.weight"]
    assert not torch.equal(embed, model.model.embed_tokens.weight)  # it trained
    assert torch.equal(saved.get("lm_head.weight", embed), embed)  # and the head moved with the embeddings


def test_packed_training_learns_with_varlen_attention(tiny_model_dir, data, tmp_path):
    """Also with augmentation over two epochs (about 8 steps each): the second reads its own draw; and
    with the decisions weighed (the loss with weights, the dev loss without)."""
    out = tmp_path / "packed"
    result = run(torchrun_cmd(2, out, tiny_model_dir, data, "--packing", "true", "--max_length", "1024",
                              "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                              "--max_steps", "12", "--irrelevance_rate", "0.3", "--decision_weight", "5"))
    assert "packed rows" in result.stderr and "sdpa_varlen attention" in result.stderr
    assert "epoch 1: its own augmentation draw" in result.stderr  # said even when datasets had it cached
    rows = metrics(out)
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(losses) == 12 and evals[-1] < evals[0] and sum(losses[-3:]) < sum(losses[:3])


def test_saved_trainer_state_loads_without_unpickling_code(tmp_path):
    """The resume reads each rank's state with torch.load(weights_only=True): what save_checkpoint
    writes (RNG states included) must load that way, and put the generators back."""
    import random

    import numpy as np

    from fcmistral.training import fsdp

    torch.save({"step": 3, "rng": fsdp._rng_state()}, tmp_path / "state.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    fsdp._set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


@pytest.mark.parametrize("pointer", ['{"path": "../elsewhere"}', '{"path": "/etc"}', '{"path": 3}', "not json"])
def test_a_checkpoint_pointer_outside_its_folder_is_refused(tmp_path, pointer):
    from fcmistral.errors import UserError
    from fcmistral.training.fsdp import latest_checkpoint

    root = tmp_path / "checkpoints"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "latest.json").write_text(pointer)
    with pytest.raises(UserError, match="latest.json"):
        latest_checkpoint(root)
    (root / "step-4").mkdir()
    (root / "latest.json").write_text('{"step": 4, "path": "step-4"}')
    assert latest_checkpoint(root) == root / "step-4"

"""The benchmark scripts run and report their figures (smoke runs on tiny settings; no timing is
asserted: speed targets are read off the scripts' output, see the README)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from fcmistral.evaluation.bfcl_data import installed_data_dir
from tests.conftest import REPO, native_bf16, run_script

pytestmark = pytest.mark.slow


def run_benchmark(name: str, *args: str) -> dict:
    result = run_script(f"benchmarks/{name}", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_gpu_check_dry_run_runs_every_part(tmp_path):
    """benchmarks/gpu_check.sh --cpu: the GPU check's parts at toy size, each one ok (the vLLM parts
    through evaluate.py's transformers backend and serve.py, which vLLM's need a GPU for)."""
    table = tmp_path / "table.json"
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu", "--json", str(table)], cwd=REPO,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = {row["part"]: row for row in json.loads(table.read_text())["rows"]}
    assert list(rows) == ["qlora_7b", "train", "fsdp", "merge", "vllm_eval", "vllm_serve"]
    assert all(row["result"] == "ok" for row in rows.values()), rows
    assert "original" in rows["qlora_7b"]["figures"] and "speedup" in rows["qlora_7b"]["figures"]
    assert "QLoRA" in rows["train"]["figures"] and "gloo, 2 steps" in rows["fsdp"]["figures"]
    assert "3 held-out prompts" in rows["vllm_eval"]["figures"] and "serve.py" in rows["vllm_serve"]["figures"]
    assert "| part | result | figures | s |" in result.stdout


IMPORTED_REQUIREMENTS = """
import importlib.metadata, importlib.util, json, sys
sys.path[:0] = ["benchmarks", "FSDP"]
import train, evaluate, convert_weights, gpu_qlora, fcmistral.demo.tiny
spec = importlib.util.spec_from_file_location("fsdp_train", "FSDP/train.py")
sys.modules["fsdp_train"] = module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
owners = importlib.metadata.packages_distributions()
print(json.dumps(sorted({d for name in list(sys.modules) for d in owners.get(name.split(".")[0], [])})))
"""


def test_gpu_check_wheels_carry_every_requirement_the_gpu_image_lacks():
    """Each of the package's own requirements that the GPU parts import (their scripts, the package
    beneath) is on the GPU machine (benchmarks/gpu_image_packages.txt) or among gpu_check.sh's wheels:
    the first GPU run (2026-12-04) lost its train part to google-re2, which was neither."""
    import re

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    result = subprocess.run([sys.executable, "-c", IMPORTED_REQUIREMENTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {canonicalize_name(d) for d in json.loads(result.stdout)}
    declared = {canonicalize_name(Requirement(r).name)
                for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    image = {canonicalize_name(n) for line in (REPO / "benchmarks/gpu_image_packages.txt").read_text().splitlines()
             if not line.startswith("#") for n in line.split()}
    wheels = {canonicalize_name(n) for n in re.findall(r"([\w.-]+)==", (REPO / "benchmarks/gpu_check.sh").read_text())}
    assert {"torch", "transformers", "jsonschema"} <= imported & declared  # the import list is read, not empty
    assert sorted((imported & declared) - image - wheels) == []


def test_peer_training_runs_ours_and_trl_on_the_same_rows(tmp_path):
    """benchmarks/peer_training.py on the tiny model: TRL's SFTTrainer trains on the rows train.py's split
    gives, its adapter is scored on the dev rows, and TRL's assistant mask lies inside our labels."""
    report = run_benchmark("peer_training.py", "--tiny", "--rows", "24", "--runs", "trl_padded",  # train.py: its own tests
                           "--output_dir", str(tmp_path))
    assert [r["run"] for r in report["results"]] == ["trl_padded"]
    assert all(0 < r["dev_loss"] < 20 and 0 < r["dev_loss_trl_labels"] < 20 and r["real_tokens_per_s"] > 0
               and r["peak_rss_mib"] > 0 for r in report["results"])
    agreement = report["label_agreement"]
    assert agreement["trl_only"] == 0 and agreement["supervised_by_both"] > 0 and agreement["ours_only"] > 0
    assert report["results"][0]["speed_vs_trl_padded"] == 1.0 and report["supervised_tokens"]["trl"] > 0


def test_generation_and_data_benchmarks_report_their_ratios():
    generation = run_benchmark("generation_speed.py", "--prompts", "6", "--batch_size", "3", "--max_new_tokens", "2")
    assert generation["prompts"] == 6 and generation["speedup"] > 0
    data = run_benchmark("data_prep.py", "--rows", "300", "--compare_rows", "100", "--repeats", "1")
    assert data["kept"] + data["skipped"] == 300 and data["speedup_vs_original"] > 0
    assert data["speedup_vs_original_no_prompt_repeats"] > 0
    assert data["full_cached_s"] < data["full_s"]


@native_bf16
def test_decode_step_benchmark_compares_plain_and_prepacked_layers_and_the_direct_step():
    report = run_benchmark("decode_step.py", "--rounds", "1", "--steps", "2", "--prompt_tokens", "20")
    assert report["logits_identical"] is True and report["direct_step_logits_identical"] is True
    assert report["prompt_tokens"] == 20
    for case in ("prefill_1", "prefill_8", "step_1", "step_8"):
        assert report[case]["plain_ms"] > 0 and report[case]["prepacked_ms"] > 0
    # The ratio as printed (2 decimals): a first-shape spike of the plain step under a busy machine
    # rounded it to 0.0 once, so it is checked against the times, not for being above 0.
    step = report["step_8"]
    assert step["direct_ms"] > 0 and step["direct_ratio"] == pytest.approx(step["direct_ms"] / step["plain_ms"], rel=0.02,
                                                                           abs=0.01)  # times printed to 0.01 ms
    for rows in (1, 8):  # where a step's time goes, for one client and for eight
        shares = report[f"step_{rows}_direct_breakdown"]
        assert shares["products_share"] > 0 and shares["attention_share"] > 0 and shares["other_operators_share"] > 0
        assert 0.5 < sum(v for k, v in shares.items() if k.endswith("_share")) <= 1.01
        # The rate the products read the weights at: the weights' bytes over the products' time a step
        # (as printed, to 4 significant digits: one printed to a decimal read 0.0 after a slow first step).
        assert shares["products_read_gb_s"] == pytest.approx(report["weights_mb"] / shares["products_ms"], rel=0.01)
    # The step's floor: the weights' bytes at the rate this machine reads memory.
    assert report["step_floor_ms"] == pytest.approx(report["weights_mb"] / report["memory_read_gb_s"], rel=0.01)


def test_fsdp_load_memory_benchmark_reports_every_rank():
    report = run_benchmark("fsdp_load_memory.py", "--tiny")
    for mode in ("every_rank_reads", "rank0_broadcasts"):
        assert set(report[mode]) == {"rank0_peak_rss_mib", "rank1_peak_rss_mib"}
        assert all(v > 0 for v in report[mode].values())


def test_dtype_benchmark_reports_each_dtype_and_thread_count():
    report = run_benchmark("dtype_speed.py", "--steps", "1", "--repeats", "1")
    assert report["auto_choice"] == "torch.float32 (model width 128)"  # the tiny model: fp32 on any CPU
    for what in ("matmul_4096x256x1024", "linear4bit_fwd_bwd", "qlora_step"):
        assert report[f"{what}_ms_fp32"] > 0 and report[f"{what}_ms_bf16"] > 0 and report[f"{what}_bf16_over_fp32"] > 0
    (threads,) = [v for k, v in report.items() if k.endswith("_by_threads")]
    assert set(threads) == {"1_threads_alone", "2_threads_alone", "1_threads_beside_busy_process",
                            "2_threads_beside_busy_process"}


def test_server_load_benchmark_reports_each_level():
    report = run_benchmark("server_load.py", "--clients", "1,3", "--seconds", "2", "--max_tokens", "4", "--constrained")
    assert [level["clients"] for level in report["levels"]] == [1, 3]
    assert all(level["constrained"]["errors"] == 0 and level["constrained_over_plain"] > 0 for level in report["levels"])
    assert all(level["requests"] > 0 and level["errors"] == 0 for level in report["levels"])
    assert report["server_rss_mib_start"] > 0 and set(report["speedup_over_one_client"]) == {"1", "3"}
    engine = run_benchmark("server_load.py", "--engine_only", "--clients", "1,2", "--max_tokens", "2")
    assert set(engine["engine_requests_per_s"]) == {"1", "2"} and engine["prompt_tokens"] > 100


def test_real_model_experiment_smoke_run(smollm2_dir, tmp_path):
    """The SmolLM2 ablation end to end on a few rows and steps: row a trained, merged and evaluated on the
    wide held-out rows and the five BFCL categories, its results merged into a report holding an earlier
    run's row (figures: docs)."""
    if installed_data_dir() is None or importlib.util.find_spec("bfcl") is None:
        pytest.skip("BFCL is not installed: pip install --no-deps bfcl-eval==2026.3.23 nvidia-bfcl==26.3")
    out = tmp_path / "real"
    out.mkdir()
    earlier = {"held_out_items": 9, "call_name_accuracy": 0.0, "exact_argument_match": 0.0, "eval_s": 60.0}
    (out / "report.json").write_text(json.dumps({"model": "SmolLM2-135M-Instruct", "rows": {"zero": earlier}}))
    result = run_script("benchmarks/real_model.py", "--model_path", str(smollm2_dir), "--wide_dir", str(tmp_path / "wide"),
                        "--eval_limit", "2", "--bfcl_limit", "1", "--max_new_tokens", "24", "--output_dir", str(out),
                        "--only", "a", "--max_steps", "2", "--max_length", "512", "--train_rows", "40")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert list(rows) == ["zero", "a"] and rows["zero"] == earlier  # an earlier session's row is kept

    def held_out(row: dict) -> int:  # items scored: the call items and the declining ones
        return row["held_out_items"] + row["held_out_declines"]["n"]

    assert held_out(rows["a"]) == 2 and rows["a"]["train_s"] > 0 and rows["a"]["max_steps"] == 2
    fields = rows["a"]["held_out_fields"]  # the formulas of fields no row trains on
    assert fields["n"] + fields["declines"]["n"] == 2 and "| held-out fields exact |" in result.stdout
    assert all(rows["a"][f"bfcl_{c}"]["n"] == 1 for c in ("simple", "irrelevance", "multiple", "parallel", "parallel_multiple"))
    assert (out / "a" / "merged" / "model.safetensors").is_file() and (tmp_path / "wide" / "wide_heldout.jsonl").is_file()
    assert (tmp_path / "wide" / "wide_heldout_fields.jsonl").is_file()
    assert "| zero: zero-shot |" in result.stdout and "| a: sample data (10 functions) | 2 |" in result.stdout
    again = run_script("benchmarks/real_model.py", "--model_path", str(smollm2_dir), "--output_dir", str(out), "--only", "a")
    assert again.returncode == 1 and again.stderr.startswith("error: row a already has results")  # never replaced unasked
    trained = (out / "a" / "merged" / "model.safetensors").stat().st_mtime_ns
    again = run_script("benchmarks/real_model.py", "--model_path", str(smollm2_dir), "--wide_dir", str(tmp_path / "wide"),
                       "--eval_limit", "1", "--bfcl_limit", "1", "--max_new_tokens", "24", "--output_dir", str(out),
                       "--only", "a", "--evaluate_again", "--choose_bias")  # the trained model, evaluated again
    assert again.returncode == 0, again.stderr[-3000:]
    evaluated = json.loads((out / "report.json").read_text())["rows"]["a"]
    assert held_out(evaluated) == 1 and evaluated["train_s"] == rows["a"]["train_s"]
    chosen = evaluated["chosen"]  # the held-out grid, its rule's bias, and BFCL there
    assert list(chosen["held_out_means"]) == ["-3", "-2", "-1", "+0"] and chosen["bias"] in (-3, -2, -1, 0)
    assert all(chosen[f"bfcl_{c}"]["n"] == 1 for c in ("simple", "irrelevance", "multiple", "parallel"))
    assert "At the call bias the held-out rule picks" in again.stdout and f"| a | {chosen['bias']:g} |" in again.stdout
    assert (out / "a" / "merged" / "model.safetensors").stat().st_mtime_ns == trained


def test_the_held_out_rule_picks_the_best_mean_of_exact_arguments_and_declines_ties_toward_zero():
    """The rule every run of docs/training.md's targets table was read at, now the benchmark's own."""
    from benchmarks.real_model import choose_bias, held_out_mean

    def summary(exact: float, declines: float) -> dict:
        return {"exact_match": exact, "declines": {"n": 21, "accuracy": declines}}

    row_e = {-3.0: summary(0.277, 1.0), -2.0: summary(0.626, 0.952), -1.0: summary(0.877, 0.714), 0.0: summary(0.897, 0.429)}
    assert choose_bias(row_e) == -1.0 and held_out_mean(row_e[-2.0]) == 78.9  # docs/training.md, row e at 240 steps
    tied = {-3.0: summary(0.2, 1.0), -2.0: summary(0.6, 0.6), -1.0: summary(0.7, 0.5), 0.0: summary(0.9, 0.0)}
    assert choose_bias(tied) == -1.0  # -2 and -1 both 60.0: toward 0
    assert choose_bias({b: summary(0.5, 0.5) for b in (-3.0, -2.0, -1.0, 0.0)}) == 0.0


def test_real_model_refuses_wide_data_other_than_this_code_writes(tmp_path):
    """A data folder an earlier generator wrote would train a row on other data than its report says:
    the experiment stops with one line and leaves the folder as it is."""
    wide, model = tmp_path / "wide", tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # the data is checked before the model is loaded
    made = subprocess.run([sys.executable, "-m", "fcmistral.demo.wide_data", "--out_dir", str(wide)], cwd=REPO,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    rows = (wide / "wide_train.jsonl").read_text().splitlines(keepends=True)
    edited = "".join(rows[1:] + rows[:1])  # the same rows in another order: other data all the same
    (wide / "wide_train.jsonl").write_text(edited)
    result = run_script("benchmarks/real_model.py", "--model_path", str(model), "--wide_dir", str(wide), "--output_dir",
                        str(tmp_path / "real"), "--only", "zero")
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "wide_train.jsonl" in result.stderr
    assert (wide / "wide_train.jsonl").read_text() == edited
    # A folder this code wrote before the held-out fields existed is used, and the fields file added to it.
    (wide / "wide_train.jsonl").write_text("".join(rows))
    fields = (wide / "wide_heldout_fields.jsonl").read_text()
    (wide / "wide_heldout_fields.jsonl").unlink()
    run_script("benchmarks/real_model.py", "--model_path", str(model), "--wide_dir", str(wide), "--output_dir",
               str(tmp_path / "real"), "--only", "zero")  # fails later: the model has no weights
    assert (wide / "wide_heldout_fields.jsonl").read_text() == fields

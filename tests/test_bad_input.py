"""Bad input to convert_weights.py, evaluate.py, inference.py and serve.py: one `error:` line, exit 2, no
traceback, and nothing written. (train.py's list is in test_train_cli.py.)"""

from __future__ import annotations

import socket

import pytest

from tests.conftest import run_script


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir, tiny_tokenizer) -> dict[str, str]:
    """Placeholder name -> path of a broken (or busy) thing to hand a script."""
    from fcmistral.modeling import load_model
    from fcmistral.training.lora import lora_config, wrap_lora

    root = tmp_path_factory.mktemp("bad")
    corrupt = root / "corrupt_adapter"
    model = load_model(str(tiny_model_dir), False, tiny_tokenizer)
    wrap_lora(model, lora_config(), gradient_checkpointing=False).save_pretrained(corrupt)
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a copy cut short
    not_adapter = root / "not_adapter"
    not_adapter.mkdir()
    (not_adapter / "notes.txt").write_text("x")
    bad_config = root / "bad_config_adapter"
    bad_config.mkdir()
    (bad_config / "adapter_config.json").write_text("{not json")
    (root / "a_file").write_text("x")
    (root / "bad_tools.py").write_text("FUNCTIONS = [{'name': 'f', 'parameters': 'text'}]\ndef f():\n    pass\n")
    (root / "occupied").mkdir()
    (root / "occupied" / "model.safetensors").write_text("a model the user has")
    (root / "latin1_functions.txt").write_bytes('{"name": "caf\u00e9", "parameters": {}}'.encode("latin-1"))
    (root / "latin1_predictions.jsonl").write_bytes(b'{"query_id": "1"}\n{"query_id": "caf\xe9"}\n')
    return {"TINY": str(tiny_model_dir), "CORRUPT_ADAPTER": str(corrupt), "NOT_ADAPTER": str(not_adapter),
            "BAD_CONFIG_ADAPTER": str(bad_config), "A_FILE": str(root / "a_file"), "OCCUPIED": str(root / "occupied"),
            "BAD_TOOLS": str(root / "bad_tools.py"),
            "LATIN1_FUNCTIONS": str(root / "latin1_functions.txt"),
            "LATIN1_PREDICTIONS": str(root / "latin1_predictions.jsonl")}


@pytest.fixture()
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield str(sock.getsockname()[1])


CASES = [
    ("convert_weights.py", "--model_path TINY --adapter_path CORRUPT_ADAPTER --save_path OUT",
     "cannot load the LoRA adapter from"),
    ("convert_weights.py", "--model_path TINY --adapter_path NOT_ADAPTER --save_path OUT",
     "is not a LoRA adapter folder (no adapter_config.json)"),
    ("convert_weights.py", "--model_path TINY --adapter_path BAD_CONFIG_ADAPTER --save_path OUT",
     "adapter_config.json is not valid JSON"),
    ("convert_weights.py", "--model_path TINY --adapter_path CORRUPT_ADAPTER --save_path OCCUPIED",
     "already holds files: pass --overwrite to replace it"),
    ("convert_weights.py", "--model_path TINY --adapter_path CORRUPT_ADAPTER --save_path A_FILE",
     "is a file, not a folder"),
    ("convert_weights.py", "--model_path A_FILE --adapter_path CORRUPT_ADAPTER --save_path OUT",
     "--model_path '{A_FILE}' is a file"),
    ("convert_weights.py", "--model_path ./no/such/model --adapter_path CORRUPT_ADAPTER --save_path OUT",
     "no such folder"),
    ("evaluate.py", "--model_path TINY --adapter_path NOT_ADAPTER --output_dir OUT", "is not a LoRA adapter folder"),
    ("evaluate.py", "--model_path TINY --adapter_path CORRUPT_ADAPTER --output_dir OUT",
     "cannot load the LoRA adapter from"),
    ("evaluate.py", "--model_path TINY --predictions LATIN1_PREDICTIONS", "give one"),
    ("evaluate.py", "--predictions LATIN1_PREDICTIONS", "line 2 is not UTF-8 text (byte 0xe9 at column 18)"),
    ("evaluate.py", "--model_path TINY --functions LATIN1_FUNCTIONS --output_dir OUT",
     "line 1 is not UTF-8 text (byte 0xe9"),
    ("evaluate.py", "--model_path ~/no-such-model-here --output_dir OUT", "no such folder"),
    ("inference.py", "--model_path TINY --adapter_path NOT_ADAPTER", "is not a LoRA adapter folder"),
    ("serve.py", "--model_path TINY --port -1", "--port -1: a port is a number from 0 to 65535"),
    ("inference.py", "--model_path TINY --serve --port 99999", "--port 99999: a port is a number"),  # the alias
    # Checked before the model loads: the model named here does not exist, yet the error is the port's.
    ("serve.py", "--model_path not-here/offline-hub-model --port BUSY_PORT", "cannot serve on"),
    ("serve.py", "--port 8000", "give --model_path"),
    ("serve.py", "--model_path TINY --max_batch_size 0", "--max_batch_size must be above 0"),
    ("inference.py", "--model_path TINY --max_new_tokens 0", "--max_new_tokens must be above 0"),
    ("inference.py", "--model_path TINY --json", "--json goes with --prompt"),
    ("inference.py", "--model_path TINY --serve --prompt hi", "unrecognized arguments: --prompt hi"),
    ("inference.py", "--model_path TINY --functions LATIN1_FUNCTIONS", "line 1 is not UTF-8 text"),
    ("fcmistral/artifacts/mistral_tokenizer.py", "--output OCCUPIED", "already holds files: pass --overwrite"),
    ("fcmistral/artifacts/smollm2.py", "--output OCCUPIED", "already holds files: pass --overwrite"),
    ("inference.py", "--model_path TINY --callables BAD_TOOLS", "function 'f': 'parameters' must be a JSON Schema object"),
    ("inference.py", "--model_path TINY --tool_time_limit 0", "--tool_time_limit must be above 0"),
    ("inference.py", "--model_path TINY --loop_penalty -0.5", "--loop_penalty must be 0 or above"),
    ("serve.py", "--model_path TINY --loop_penalty -0.5", "--loop_penalty must be 0 or above"),
    ("evaluate.py", "--model_path TINY --loop_penalty -0.5", "--loop_penalty must be 0 or above"),
    ("inference.py", "--model_path TINY --loop_penalty nan --prompt hi", "--loop_penalty must be 0 or above"),
    ("serve.py", "--model_path TINY --loop_penalty inf", "--loop_penalty must be 0 or above"),
    ("evaluate.py", "--model_path TINY --loop_penalty nan", "--loop_penalty must be 0 or above"),
    ("inference.py", "--model_path TINY --call_bias nan --prompt hi", "--call_bias must be a finite number"),
    ("serve.py", "--model_path TINY --call_bias=-inf", "--call_bias must be a finite number"),
    ("evaluate.py", "--model_path TINY --call_bias=0,nan", "--call_bias must be a finite number"),
    ("evaluate.py", "--model_path TINY --repetition_penalty nan", "--repetition_penalty must be above 0"),
    ("inference.py", "--model_path TINY --tool_time_limit inf", "--tool_time_limit must be above 0 and finite"),
]


@pytest.mark.parametrize("script, given, message", CASES, ids=[f"{s} {g}" for s, g, _ in CASES])
def test_bad_input_is_one_error_line_and_writes_nothing(script, given, message, files, busy_port, tmp_path):
    names = {**files, "BUSY_PORT": busy_port, "OUT": str(tmp_path / "out")}
    result = run_script(script, *[names.get(word, word) for word in given.split()], env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.format(**names) in last, last
    assert not (tmp_path / "out").exists()

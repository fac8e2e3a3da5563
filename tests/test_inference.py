"""The function-calling loop, the tools and the merge, on scripted
replies (a stub only at the generation boundary) and on the real tiny model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fcmistral.chat_template import chat_template
from fcmistral.demo.functions import DEMO_CALLABLES, DEMO_SCHEMAS
from fcmistral.errors import UserError
from fcmistral.prompt import ASSISTANT_TAG, format_call
from fcmistral.serving.callables import check_callables_cover, load_callables_module
from fcmistral.serving.chat import ChatSession
from tests.conftest import run_script


class Scripted:
    """A model whose replies are written in advance; ``continues`` lists the replies after which it
    starts another assistant turn (what the trained model says through the tag it predicts)."""

    def __init__(self, replies: list[str], continues: tuple[int, ...] = ()) -> None:
        self.replies, self.continues, self.prompts, self.count = list(replies), set(continues), [], 0

    def __call__(self, prompt: str, max_new_tokens: int | None = None, stream: bool = False,
                 guided: bool = True) -> str:
        self.prompts.append(prompt)
        assert guided == prompt.endswith(ASSISTANT_TAG)  # a peek is never under the call constraint
        if prompt.endswith(ASSISTANT_TAG):
            self.count += 1
            return " " + self.replies.pop(0)
        assert prompt.endswith("<|endoftext|>")  # the peek after a finished turn
        return "\n\n\nASSISTANT:" if self.count - 1 in self.continues else "\n\n\nUSER:"


def weather_call(**arguments) -> str:
    return format_call("get_current_weather", arguments or {"location": "Paris", "unit": "celsius"})


def test_full_transcript_call_response_answer():
    model = Scripted([weather_call(), "It is 18 degrees and cloudy in Paris."])
    session = ChatSession(model, DEMO_SCHEMAS, DEMO_CALLABLES)
    turns = session.send("Weather in Paris?")
    assert [t.role for t in turns] == ["user", "function_call", "function_response", "assistant"]
    assert json.loads(turns[2].content) == {"location": "Paris", "temperature": 18, "unit": "celsius", "condition": "cloudy"}
    # The second prompt is the exact glaive text of the conversation so far.
    assert model.prompts[-2].endswith(
        "USER: Weather in Paris?\n\n\nASSISTANT: " + weather_call() + " <|endoftext|>\n\n\nFUNCTION RESPONSE: "
        + turns[2].content + "\n\n\nASSISTANT:")
    assert model.prompts[0].startswith(session.system) and '"name": "calculate_tax"' in session.system


def test_acknowledge_then_call_is_two_assistant_turns():
    model = Scripted(["Sure, let me check that for you.", weather_call(), "It is 18 degrees."], continues=(0,))
    turns = ChatSession(model, DEMO_SCHEMAS, DEMO_CALLABLES).send("Weather in Paris?")
    assert [t.role for t in turns] == ["user", "assistant", "function_call", "function_response", "assistant"]


@pytest.mark.parametrize(
    "reply, error",
    [
        ('<functioncall> {"name": "get_current_weather", "arguments": \'{"location": ', "could not be parsed"),
        (format_call("book_flight", {"to": "Rome"}), "unknown function 'book_flight'"),
        (format_call("calculate_tax", {"income": "a lot"}), "invalid arguments"),
        (format_call("convert_currency", {"amount": 5, "from_currency": "XXX", "to_currency": "EUR"}),
         "convert_currency failed: ValueError: unknown currency XXX"),
    ],
)
def test_bad_calls_go_back_to_the_model_as_json_errors(reply, error):
    model = Scripted([reply, "Sorry, that did not work."])
    turns = ChatSession(model, DEMO_SCHEMAS, DEMO_CALLABLES).send("Do it")
    assert [t.role for t in turns] == ["user", "function_call", "function_response", "assistant"]
    assert error in json.loads(turns[2].content)["error"] + " ".join(json.loads(turns[2].content).get("details", []))


def test_apostrophes_in_values_reach_the_function_intact(tmp_path):
    module = tmp_path / "my_tools.py"
    module.write_text(
        "FUNCTIONS = [{'name': 'echo', 'description': 'Echo', 'parameters': {'type': 'object',\n"
        "    'properties': {'text': {'type': 'string'}}, 'required': ['text']}}]\n"
        "def echo(text):\n    return {'echo': text}\n"
        "def _private():\n    pass\n"
    )
    tools, functions = load_callables_module(module)
    assert set(tools) == {"echo"} and functions[0]["name"] == "echo"
    model = Scripted([format_call("echo", {"text": "l'été, it's"}), "Done."])
    turns = ChatSession(model, functions, tools).send("Echo l'été, it's")
    assert json.loads(turns[2].content) == {"echo": "l'été, it's"}


def test_max_calls_bounds_a_calling_loop():
    model = Scripted([weather_call()] * 3)
    turns = ChatSession(model, DEMO_SCHEMAS, DEMO_CALLABLES, max_calls=2).send("Weather?")
    assert [t.role for t in turns].count("function_call") == 3
    assert [t.role for t in turns].count("function_response") == 2 and not model.replies


def test_tools_module_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_callables_module(tmp_path / "none.py")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(UserError, match="cannot import"):
        load_callables_module(broken)
    with pytest.raises(UserError, match="no Python function for the schemas"):
        check_callables_cover(DEMO_SCHEMAS, {"calculate_tax": DEMO_CALLABLES["calculate_tax"]})


@pytest.mark.slow
def test_real_loop_on_the_tiny_model(tiny_model_dir):
    result = run_script("inference.py", "--model_path", str(tiny_model_dir), "--prompt",
                        "What's the weather like in Paris right now?", "--json", "--max_new_tokens", "24",
                        "--max_calls", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    turns = json.loads(result.stdout)["turns"]
    assert turns[0] == {"role": "user", "content": "What's the weather like in Paris right now?", "calls": []}
    assert turns[1]["role"] in ("assistant", "function_call") and len(turns) >= 2


def logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(["USER: Convert 10 EUR to USD\n\n\nASSISTANT: <functioncall>"], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.float()


@pytest.mark.slow
@pytest.mark.parametrize("into_dequantized", [False, True])
def test_merged_model_matches_the_peft_model(into_dequantized, tiny_model_dir, tiny_tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fcmistral.modeling import load_model
    from fcmistral.training.lora import lora_config, wrap_lora

    torch.manual_seed(0)
    fp32 = torch.float32  # every side computes in fp32, whatever this CPU's default dtype is
    peft_model = wrap_lora(load_model(str(tiny_model_dir), False, tiny_tokenizer, dtype=fp32), lora_config(), False)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a model the user asks to replace
    gguf = tmp_path / "merged.gguf"  # and, the first time, the GGUF export with its Ollama Modelfile
    result = run_script("convert_weights.py", "--model_path", str(tiny_model_dir), "--adapter_path", str(adapter),
                        "--save_path", str(out), "--compute_dtype", "fp32", "--overwrite",
                        # --dtype in the project's spelling, and once in its old one (a hidden alias)
                        "--dtype", "float32" if into_dequantized else "fp32",
                        *(["--load_in_4bit"] if into_dequantized else ["--gguf", str(gguf), "--gguf_type", "f32"]))
    assert result.returncode == 0, result.stderr[-2000:]
    exported = [] if into_dequantized else ["Modelfile", "merged.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["adapter", "merged", *exported])  # no staging left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's 0o700
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and (out / "tokenizer.json").is_file()
    assert config["dtype"] == "float32"
    assert (out / "chat_template.jinja").read_text() == chat_template()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = load_model(str(tiny_model_dir), into_dequantized, tiny_tokenizer, dtype=fp32).eval()
    without_adapter = logits(base, tiny_tokenizer)
    reference = PeftModel.from_pretrained(base, adapter).eval()  # injects the adapter into base
    expected, got = logits(reference, tiny_tokenizer), logits(merged, tiny_tokenizer)
    assert (expected - without_adapter).abs().max() > 0.5  # the adapter really changes the output
    # float rounding only: the merged weights are the (dequantized) base plus the adapter's product.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    if not into_dequantized:  # the GGUF holds the merged model, read back by transformers' GGUF loader
        from_gguf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=fp32).eval()
        torch.testing.assert_close(logits(from_gguf, tiny_tokenizer), got, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_interactive_chat_reads_stdin_with_reset_and_exit(tiny_model_dir):
    result = run_script("inference.py", "--model_path", str(tiny_model_dir), "--max_new_tokens", "8",
                        "--max_calls", "1", stdin="What's the weather in Paris?\n/reset\n/exit\nnever read\n")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("Chat with the model") and "ASSISTANT:" in out and "(conversation reset)" in out
    assert out.count("USER: ") == 3  # prompts for the message, /reset and /exit; nothing after /exit

"""Function-calling chat with a fine-tuned model: the model calls, the functions run, it answers.

    python inference.py --model_path outputs/merged                       # interactive chat
    python inference.py --model_path outputs/merged --prompt "Weather in Paris?" [--json]
    python inference.py --model_path outputs/merged --serve --port 8000   # OpenAI-compatible API

Functions come from ``--functions FILE`` (custom_function.txt style, a JSON list or an OpenAI
tools list) and run from ``--tools my_tools.py`` (its functions, by name); without either, a small
built-in demo set (get_current_weather, calculate_tax, convert_currency) is used.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field

from fcmistral.cli import UserError, run_cli  # isort: skip  (first: quiets a bitsandbytes import warning)
from transformers import HfArgumentParser

from fcmistral.hardware import COMPUTE_DTYPE_CHOICES, COMPUTE_DTYPE_HELP, compute_dtype

from fcmistral.chat import ChatSession
from fcmistral.functions import load_functions
from fcmistral.prompt import ASSISTANT_TAG, TAG_OF_ROLE, Turn
from fcmistral.tools import DEMO_FUNCTIONS, DEMO_TOOLS, check_tools_cover, load_tools_module

log = logging.getLogger("inference")


@dataclass
class InferenceArguments:
    model_path: str = field(default=None, metadata={"help": "merged model folder or hub name (or the base, with --adapter_path)"})
    adapter_path: str = field(default=None, metadata={"help": "LoRA adapter folder to apply on --model_path"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the model in 4-bit NF4"})
    compute_dtype: str = field(default="auto", metadata={"help": COMPUTE_DTYPE_HELP, "choices": COMPUTE_DTYPE_CHOICES})
    functions: str = field(default=None, metadata={"help": "function schemas file (default: the demo set, or the tools module's FUNCTIONS)"})
    tools: str = field(default=None, metadata={"help": "Python file whose functions implement the schemas"})
    max_new_tokens: int = field(default=400, metadata={"help": "tokens per assistant turn at most"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (with --do_sample)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling (with --do_sample)"})
    max_calls: int = field(default=3, metadata={"help": "function calls per user message at most"})
    prompt: str = field(default=None, metadata={"help": "one user message: print the transcript and exit"})
    json: bool = field(default=False, metadata={"help": "with --prompt: print the transcript as JSON"})
    serve: bool = field(default=False, metadata={"help": "serve the OpenAI-compatible API instead of chatting"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback by default)"})
    port: int = field(default=8000, metadata={"help": "port to serve on"})


def resolve_functions(args: InferenceArguments):
    if args.tools:
        tools, module_functions = load_tools_module(args.tools)
        functions = load_functions(args.functions) if args.functions else module_functions
        if not functions:
            raise UserError("give --functions, or define FUNCTIONS (a list of schemas) in the tools module")
        check_tools_cover(functions, tools)
        return functions, tools
    functions = load_functions(args.functions) if args.functions else DEMO_FUNCTIONS
    check_tools_cover(functions, DEMO_TOOLS)  # without --tools only the demo functions can run
    return functions, DEMO_TOOLS


def turn_record(turn: Turn) -> dict:
    call = asdict(turn.call) if turn.call else None
    return {"role": turn.role, "content": turn.content, "call": call}


def print_turn(turn: Turn) -> None:
    print(f"{TAG_OF_ROLE[turn.role]} {turn.content}", flush=True)


def chat_loop(session: ChatSession) -> None:
    print("Chat with the model: /reset starts over, /exit (or Ctrl-D) quits.", flush=True)
    while True:
        try:
            message = input("USER: ").strip()
        except EOFError:
            print()
            return
        if message == "/exit":
            return
        if message == "/reset":
            session.reset()
            print("(conversation reset)")
            continue
        if message:
            # Assistant text is streamed as it is generated; the rest is printed when it happens.
            session.send(message, on_turn=lambda t: print_turn(t) if t.role == "function_response" else None)


def main() -> None:
    (args,) = HfArgumentParser(InferenceArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses()
    if not args.model_path:
        raise UserError("give --model_path (a merged model, or the base with --adapter_path)")
    if args.json and not args.prompt:
        raise UserError("--json goes with --prompt")
    functions, tools = resolve_functions(args)
    from fcmistral.generation import Completer, load_for_generation

    model, tokenizer = load_for_generation(args.model_path, args.adapter_path, args.load_in_4bit,
                                           compute_dtype(args.compute_dtype))
    complete = Completer(model, tokenizer, args.max_new_tokens, args.do_sample, args.temperature, args.top_p,
                         stream_prefix=ASSISTANT_TAG)
    if args.serve:
        from fcmistral.server import ChatCompletionServer

        server = ChatCompletionServer(complete, args.adapter_path or args.model_path, args.host, args.port)
        print(f"serving {server.model_name} on http://{args.host}:{server.server_port}/v1", flush=True)
        server.serve_forever()
    session = ChatSession(complete, functions, tools, args.max_calls, stream=not args.prompt)
    if args.prompt:
        turns = session.send(args.prompt)
        if args.json:
            json.dump({"turns": [turn_record(t) for t in turns]}, sys.stdout, ensure_ascii=False, indent=2)
            print()
        else:
            for turn in turns:
                print_turn(turn)
        return
    chat_loop(session)


if __name__ == "__main__":
    run_cli(main)

"""Function-calling chat with a fine-tuned model: the model calls, the functions run, it answers.

    python inference.py --model_path outputs/merged                       # interactive chat
    python inference.py --model_path outputs/merged --prompt "Weather in Paris?" [--json]

The OpenAI-compatible server is serve.py (``--serve`` here is an alias that says so).

Functions come from ``--functions FILE`` (custom_function.txt style, a JSON list or an OpenAI
tools list) and run from ``--callables my_tools.py`` (its functions, by name); without either, a small
built-in demo set (get_current_weather, calculate_tax, convert_currency) is used.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field

from fcmistral.arguments import (
    LOOP_PENALTY_HELP,
    MAJORITY_DECISIONS_HELP,
    ModelArguments,
    check_call_bias,
    check_loop_penalty,
    parse_arguments,
)
from fcmistral.cli import run_cli
from fcmistral.demo.functions import DEMO_CALLABLES, DEMO_SCHEMAS
from fcmistral.errors import UserError
from fcmistral.format.schemas import load_schemas, normalize_schema
from fcmistral.hardware import compute_dtype
from fcmistral.prompt import ASSISTANT_TAG, TAG_OF_ROLE, Turn
from fcmistral.serving.callables import check_callables_cover, load_callables_module
from fcmistral.serving.chat import ChatSession
from fcmistral.serving.server import serve_command

log = logging.getLogger("inference")


@dataclass
class InferenceArguments:
    """This script's options; the model's are fcmistral.arguments.ModelArguments."""

    functions: str = field(default=None, metadata={"help": "function schemas file (default: the demo set, or the tools module's FUNCTIONS)"})
    callables: str = field(default=None, metadata={"help": "Python file whose functions implement the schemas"})
    max_new_tokens: int = field(default=400, metadata={"help": "tokens per assistant turn at most"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (with --do_sample)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling (with --do_sample)"})
    max_calls: int = field(default=3, metadata={"help": "call turns per user message at most (a turn may hold several calls, run in parallel order)"})
    tool_time_limit: float = field(default=30.0, metadata={
        "help": "seconds a function call may take; past it the model is told the call timed out"})
    constrained_calls: bool = field(default=False, metadata={
        "help": "constrain calls to the functions' schemas as they are generated (the call then always parses)"})
    call_bias: float = field(default=0.0, metadata={
        "help": "added to the call marker's first logit where a turn starts: > 0 calls more often, < 0 less"})
    loop_penalty: float = field(default=0.0, metadata={"help": LOOP_PENALTY_HELP})
    majority_decisions: bool = field(default=False, metadata={"help": MAJORITY_DECISIONS_HELP})
    prompt: str = field(default=None, metadata={"help": "one user message: print the transcript and exit"})
    json: bool = field(default=False, metadata={"help": "with --prompt: print the transcript as JSON"})
    def __post_init__(self) -> None:
        check_loop_penalty(self.loop_penalty)
        check_call_bias(self.call_bias)
        if self.json and not self.prompt:
            raise UserError("--json goes with --prompt")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise UserError("sampling needs --temperature above 0 and --top_p in (0, 1]")


def resolve_functions(args: InferenceArguments):
    if args.callables:
        callables, module_functions = load_callables_module(args.callables)
        if args.functions:
            functions = load_schemas(args.functions)
        elif isinstance(module_functions, list) and module_functions:
            functions = [normalize_schema(f) for f in module_functions]
        else:
            raise UserError("give --functions, or define FUNCTIONS (a list of schemas) in the --callables module")
        check_callables_cover(functions, callables)
        return functions, callables
    functions = load_schemas(args.functions) if args.functions else DEMO_SCHEMAS
    check_callables_cover(functions, DEMO_CALLABLES)  # without --callables only the demo functions can run
    return functions, DEMO_CALLABLES


def turn_record(turn: Turn) -> dict:
    return {"role": turn.role, "content": turn.content, "calls": [asdict(call) for call in turn.calls]}


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
    if "--serve" in sys.argv:  # the server's old home, kept as an alias
        log.warning("the server is serve.py now, with the same options: python serve.py --model_path ...")
        serve_command([a for a in sys.argv[1:] if a != "--serve"], "The OpenAI-compatible API (serve.py).")
        return
    if "--tools" in sys.argv:  # the old name of --callables ("tools" are schemas in the API), kept hidden
        log.warning("--tools is now --callables (tools are the schemas; callables the Python functions)")
        sys.argv = ["--callables" if a == "--tools" else a for a in sys.argv]
    model_args, args = parse_arguments((ModelArguments, InferenceArguments), __doc__.split("\n\n")[0],
                                       positive=("max_new_tokens", "max_calls", "tool_time_limit"))
    if not model_args.model_path:
        raise UserError("give --model_path (a merged model, or the base with --adapter_path)")
    functions, callables = resolve_functions(args)
    from fcmistral.constraint import CallConstraint
    from fcmistral.format.grammar import call_grammar
    from fcmistral.generation import load_for_generation
    from fcmistral.serving.completer import Completer

    model, tokenizer = load_for_generation(model_args.model_path, model_args.adapter_path, model_args.load_in_4bit,
                                           compute_dtype(model_args.compute_dtype, model_args.model_path))
    # One call per turn: the chat runs a turn's call, then the model reads its result.
    grammar = call_grammar(functions, "auto") if args.constrained_calls and functions else None
    complete = Completer(model, tokenizer, args.max_new_tokens, args.do_sample, args.temperature, args.top_p,
                         stream_prefix=ASSISTANT_TAG,
                         constraint=CallConstraint(grammar, args.call_bias, loop_penalty=args.loop_penalty,
                                                    majority=args.majority_decisions) or None)
    session = ChatSession(complete, functions, callables, args.max_calls, stream=not args.prompt,
                          tool_time_limit=args.tool_time_limit)
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

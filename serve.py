"""The OpenAI-compatible API over a fine-tuned model: /v1/chat/completions (tools, streaming),
/v1/completions, /v1/models, /health.

    python serve.py --model_path outputs/merged --port 8000 [--api_key KEY]
    python serve.py --model_path mistralai/Mistral-7B-v0.1 --adapter_path outputs/qlora --load_in_4bit

Clients send the tools with each request (OpenAI's ``tools``); the server checks every call
against them before returning it (docs/serving.md).
"""

from __future__ import annotations

from fcmistral.cli import run_cli
from fcmistral.serving.server import serve_command


def main() -> None:
    serve_command(None, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    run_cli(main)

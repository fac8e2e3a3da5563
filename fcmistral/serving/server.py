"""An OpenAI-compatible HTTP front end: ``POST /v1/chat/completions`` (with ``tools``) and
``GET /v1/models``, so the official ``openai`` client works unchanged.

Built on the standard library's ``ThreadingHTTPServer`` rather than a web framework: two endpoints
do not justify a new dependency. Generation is serialised by a lock (one model, one forward pass
at a time). The glaive format has a fixed system prompt built from the functions, so ``system``
messages from the client are ignored; ``tool`` messages become FUNCTION RESPONSE turns. The client
runs the tools: each request returns one assistant message, with ``tool_calls`` when it calls.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fcmistral.errors import UserError
from fcmistral.format.schemas import normalize_schema
from fcmistral.prompt import Turn, build_system_prompt, format_call
from fcmistral.serving.chat import Complete, assistant_step

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A bad request, answered with a 4xx JSON error in OpenAI's shape."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise RequestError("message content must be a string or a list of parts", param="messages")


def request_to_prompt(body: dict[str, Any]) -> tuple[str, list[Turn]]:
    """The system prompt and turns of a chat-completions request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise RequestError("'tools' must be a list", param="tools")
    try:
        functions = [normalize_schema(t) for t in tools]
    except UserError as err:
        raise RequestError(str(err), param="tools") from err
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError("each message must be an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            turns.append(Turn("user", _text(message.get("content"))))
        elif role == "tool":
            turns.append(Turn("function_response", _text(message.get("content"))))
        elif role == "assistant":
            if _text(message.get("content")).strip():
                turns.append(Turn("assistant", _text(message.get("content")).strip()))
            for call in message.get("tool_calls") or []:
                try:
                    function = call["function"]
                    arguments = json.loads(function.get("arguments") or "{}")
                    turns.append(Turn("function_call", format_call(function["name"], arguments)))
                except (KeyError, TypeError, json.JSONDecodeError) as err:
                    raise RequestError(f"malformed tool_call in an assistant message: {err}", param="messages") from err
        else:
            raise RequestError(f"unsupported message role {role!r}", param="messages")
    return build_system_prompt(functions), turns


def step_to_message(step: list[Turn]) -> tuple[dict[str, Any], str]:
    """An OpenAI assistant message (and finish reason) from the assistant's new turns."""
    texts = [t.content for t in step if t.role == "assistant" or (t.role == "function_call" and t.call is None)]
    calls = [t.call for t in step if t.role == "function_call" and t.call is not None]
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in calls
        ]
    return message, "tool_calls" if calls else "stop"


class _Handler(BaseHTTPRequestHandler):
    server: "ChatCompletionServer"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, err: RequestError) -> None:
        error_type = "invalid_request_error" if err.status < 500 else "server_error"
        self._send(err.status, {"error": {"message": str(err), "type": error_type, "param": err.param, "code": None}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(HTTPStatus.OK, {"object": "list", "data": [
                {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "fcmistral"}]})
        else:
            self._error(RequestError(f"no route {self.path}", HTTPStatus.NOT_FOUND))

    def do_POST(self) -> None:
        try:
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise RequestError(f"no route {self.path}", HTTPStatus.NOT_FOUND)
            self._send(HTTPStatus.OK, self._complete(self._body()))
        except RequestError as err:
            self._error(err)
        except Exception:  # logged here, never sent: the client gets a JSON error without a traceback
            log.exception("chat completion failed")
            self._error(RequestError("internal error while generating", HTTPStatus.INTERNAL_SERVER_ERROR))

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the request body is not valid JSON: {err}") from err
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("stream"):
            raise RequestError("streaming is not supported", param="stream")
        if body.get("n", 1) != 1:
            raise RequestError("only n=1 is supported", param="n")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise RequestError("max_tokens must be a positive integer", param="max_tokens")
        system, turns = request_to_prompt(body)
        server = self.server

        def complete(prompt: str, max_new_tokens: int | None = None, stream: bool = False) -> str:
            return server.complete(prompt, max_new_tokens or max_tokens)

        with server.lock:
            step = assistant_step(complete, system, turns)
        message, finish = step_to_message(step)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": server.model_name, "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


class ChatCompletionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, complete: Complete | None, model_name: str, host: str = "127.0.0.1", port: int = 8000) -> None:
        super().__init__((host, port), _Handler)
        self.complete, self.model_name, self.lock = complete, model_name, threading.Lock()


def bind_server(model_name: str, host: str, port: int) -> ChatCompletionServer:
    """The server, bound to ``host:port`` but not yet serving; its ``complete`` is set once the model
    is loaded. A port in use or an unknown host is a one-line error."""
    try:
        return ChatCompletionServer(None, model_name, host, port)
    except OSError as err:
        raise UserError(f"cannot serve on {host}:{port}: {err.strerror or err}") from err

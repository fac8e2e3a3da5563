"""The OpenAI-compatible API as a FastAPI app, served by uvicorn (``server.py``): thin routes that
read and validate the body, call the handler of their endpoint (``chat_completions.py``,
``completions.py``) and return its JSON or its event stream. Here too: the API key, the body's size
and time limits, and every error in OpenAI's shape (a client's mistake a 4xx naming the field; a
failure of ours a 500 without a traceback, which is logged). Generation is the engine's
(``engine/``), in a process of its own (``engine/process.py``)."""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fcmistral.serving.chat_completions import ChatCompletions
from fcmistral.serving.completions import Completions
from fcmistral.serving.engine import EngineClient
from fcmistral.serving.limits import Limits
from fcmistral.serving.protocol import ChatRequest, CompletionRequest, RequestError, dump, request_functions

log = logging.getLogger(__name__)


def create_app(engine: EngineClient, model_name: str, limits: Limits | None = None,
               api_key: str | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="fcmistral", docs_url=None, redoc_url=None, openapi_url=None)

    def error(err: RequestError) -> JSONResponse:
        kind = "invalid_request_error" if err.status < 500 else "server_error"
        return JSONResponse({"error": {"message": str(err), "type": kind, "param": err.param, "code": err.code}},
                            status_code=err.status)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return error(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(RequestError(f"{err.detail}: {request.method} {request.url.path}", err.status_code))

    @app.exception_handler(Exception)
    async def _internal(_: Request, err: Exception) -> JSONResponse:
        log.exception("request failed")  # logged here; the client gets a JSON error without a traceback
        return error(RequestError("internal error while generating", 500))

    @app.middleware("http")
    async def _authorize(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error(RequestError("invalid or missing API key (Authorization: Bearer KEY)", 401,
                                          code="invalid_api_key"))
        return await call_next(request)

    async def body(request: Request, kind: type[BaseModel]):
        """The request body parsed into ``kind``: at most max_request_bytes, read within the timeout."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_request_bytes:
            raise RequestError(f"the body is {declared} bytes; this server accepts {limits.max_request_bytes}", 413)
        data = bytearray()

        async def read() -> None:
            async for chunk in request.stream():
                data.extend(chunk)
                if len(data) > limits.max_request_bytes:
                    raise RequestError(f"the body is over {limits.max_request_bytes} bytes", 413)

        try:
            await asyncio.wait_for(read(), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(f"the body did not arrive within {limits.body_timeout_s:g} s", 408) from None
        try:
            return kind.model_validate_json(bytes(data))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise RequestError(f"{where}: {first['msg']}", param=str(first["loc"][0]) if first["loc"] else None) \
                from None

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list",
                "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "fcmistral"}]}

    @app.get("/health")
    async def health():
        if not engine.alive():
            return JSONResponse({"status": "the generation engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        chat_request = await body(request, ChatRequest)
        # Checking the tools' schemas is bounded but not free: done in a thread, not on the event loop.
        functions = await asyncio.to_thread(request_functions, chat_request)
        handler = ChatCompletions(chat_request, engine, limits, model_name, functions)
        if chat_request.stream:
            return EventSourceResponse(handler.stream(), ping=15)
        return Response(dump(await handler.full()), media_type="application/json")

    @app.post("/v1/completions")
    async def completions(request: Request):
        completion_request = await body(request, CompletionRequest)
        handler = Completions(completion_request, engine, limits, model_name)
        if completion_request.stream:
            return EventSourceResponse(handler.stream(), ping=15)
        return Response(dump(await handler.full()), media_type="application/json")

    return app

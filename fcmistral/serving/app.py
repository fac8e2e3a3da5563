"""The OpenAI-compatible API as a FastAPI app, served by uvicorn (``server.py``): thin routes that
read and validate the body, call the handler of their endpoint (``chat_completions.py``,
``completions.py``) and return its JSON or its event stream. Here too: the API key, the body's size
and time limits, and every error in OpenAI's shape (a client's mistake a 4xx naming the field; a
failure of ours a 500 without a traceback, which is logged). Generation is the engine's
(``engine/``), in a process of its own (``engine/process.py``)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import AsyncIterator, Awaitable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
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


def error_body(err: RequestError) -> dict:
    """An error in OpenAI's shape (as a response body, or a stream's last event)."""
    kind = "invalid_request_error" if err.status < 500 else "server_error"
    return {"error": {"message": str(err), "type": kind, "param": err.param, "code": err.code}}


def openapi_schema(app: FastAPI) -> dict:
    """The API's OpenAPI schema, with the request bodies the routes read themselves (so FastAPI sees
    none): what clients may generate code from, and what the fuzz test (tests/serving/test_fuzz.py)
    draws requests from."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version="1", routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in (("/v1/chat/completions", ChatRequest), ("/v1/completions", CompletionRequest)):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            schema["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        app.openapi_schema = schema
    return app.openapi_schema


def host_allowed(value: str, allowed: list[str]) -> bool:
    """Whether a Host header (``name[:port]``) or an Origin (``scheme://name[:port]``) names one of
    ``allowed`` (host names, any port; ``*``: any)."""
    if "*" in allowed:
        return True
    name = urlsplit(value if "://" in value else f"//{value}").hostname
    return name is not None and name.lower() in {a.lower().strip("[]") for a in allowed}


def create_app(engine: EngineClient, model_name: str, limits: Limits | None = None,
               api_key: str | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """``model_name``: what /v1/models and every reply name (never a local path: serve.py gives the
    folder's name). ``allowed_hosts``: None, any Host."""
    limits = limits or Limits()
    app = FastAPI(title="fcmistral", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.openapi = lambda: openapi_schema(app)

    def error(err: RequestError) -> JSONResponse:
        return JSONResponse(error_body(err), status_code=err.status)

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
    async def _guard(request: Request, call_next):
        """Who may ask: the Host (and a browser's Origin) among ``allowed_hosts``, so that a web page,
        or a DNS name rebound to 127.0.0.1, cannot drive a server on this machine; the API key; and
        a body declared as JSON (a form a page can post without asking is text/plain)."""
        if allowed_hosts is not None:
            for header in ("host", "origin"):
                value = request.headers.get(header)
                if (value is not None or header == "host") and not host_allowed(value or "", allowed_hosts):
                    return error(RequestError(f"{header} {value!r} is not allowed here (see --allowed_hosts)", 403,
                                              code="forbidden_host"))
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error(RequestError("invalid or missing API key (Authorization: Bearer KEY)", 401,
                                          code="invalid_api_key"))
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return error(RequestError(f"the body must be JSON (Content-Type: application/json), not {kind!r}",
                                          415))
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
        if not engine.alive():  # a process engine: exited, silent past its timeout, or loading again
            return JSONResponse({"status": "the generation engine is not answering; it is being restarted"},
                                status_code=503)
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        chat_request = await body(request, ChatRequest)
        # Checking the tools' schemas, writing their call grammar and tokenizing the prompt are bounded
        # but not free: done in a thread, not on the event loop.
        handler = await asyncio.to_thread(
            lambda: ChatCompletions(chat_request, engine, limits, model_name, request_functions(chat_request)))
        return await respond(request, handler, chat_request.stream)

    @app.post("/v1/completions")
    async def completions(request: Request):
        completion_request = await body(request, CompletionRequest)
        handler = Completions(completion_request, engine, limits, model_name)
        return await respond(request, handler, completion_request.stream)

    async def respond(request: Request, handler: ChatCompletions | Completions, streamed: bool) -> Response:
        """The handler's reply, within the request's deadline: streamed as events, or whole (and
        dropped, its generation stopped, when the client disconnects before it is done)."""
        deadline = asyncio.get_running_loop().time() + limits.request_timeout_s
        if streamed:
            return EventSourceResponse(events(handler.stream(), deadline), ping=15, send_timeout=limits.send_timeout_s)
        reply = await until_disconnected(request, handler.full(), deadline)
        return Response(dump(reply), media_type="application/json") if reply is not None else Response(status_code=499)

    async def events(stream: AsyncIterator[str], deadline: float) -> AsyncIterator[str]:
        """A handler's events; a failure mid-stream (the engine restarting, the deadline) ends it
        with an error event in OpenAI's shape and ``[DONE]`` rather than a cut connection."""
        try:
            while True:
                # The deadline covers the wait for each event, never the yield: a timeout that fired
                # while the event is being sent would cancel the sender, cutting the stream unended.
                async with asyncio.timeout_at(deadline):
                    try:
                        event = await anext(stream)
                    except StopAsyncIteration:
                        return
                yield event
        except RequestError as err:
            failure = err
        except TimeoutError:
            failure = timed_out()
        except Exception:  # noqa: BLE001 - logged; the client gets an error event without a traceback
            log.exception("a streamed request failed")
            failure = RequestError("internal error while generating", 500)
        finally:
            await stream.aclose()  # its engine row is stopped now, not when the generator is collected
        yield json.dumps(error_body(failure))
        yield "[DONE]"

    def timed_out() -> RequestError:
        return RequestError(f"generation took longer than this server allows ({limits.request_timeout_s:g} s)", 504,
                            code="timeout")

    async def until_disconnected(request: Request, work: Awaitable, deadline: float):
        """``work``'s result; None if the client disconnects first (the work is cancelled, which
        stops its rows in the engine: a plain request nobody waits for costs nothing more)."""
        task = asyncio.ensure_future(work)

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait({task, watch}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        if watch in done:
            log.info("a client disconnected; its request was stopped")
            return None
        raise timed_out()

    return app

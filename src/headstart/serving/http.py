"""The server's HTTP edges: a request-body size limit and JSON errors for every failure.

Every error, whether raised by headstart, by FastAPI's validation, by routing (404/405) or by
a bug, leaves as ``{"error": "<code>", "detail": "<what was wrong and how to fix it>"}``
with a fitting status, and the process keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import HeadstartError
from .inputs import RequestError

log = logging.getLogger("headstart.serve")

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with a 413, before they are read whole.

    A declared ``Content-Length`` over the limit is refused at once; a body sent without one
    (chunked) is counted as it arrives and refused at the first byte past the limit, so memory
    per request stays bounded either way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self, size: str) -> JSONResponse:
        return error_response(
            413,
            "payload_too_large",
            f"the request body is {size}; this server accepts at most {self.max_bytes} bytes "
            "(headstart serve --max-body-mb): send fewer or smaller inputs per request",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refusal(f"{int(declared)} bytes")(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refusal(f"over {self.max_bytes} bytes")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors for headstart's own refusals, validation, routing and unexpected bugs."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(HeadstartError)
    async def _headstart_error(request: Request, exc: HeadstartError) -> JSONResponse:
        return error_response(422, "bad_input", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[Any] = list(exc.errors())
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
        )
        return error_response(422, "invalid_request", where or "the request is invalid")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "internal_error",
            f"{type(exc).__name__}: {exc}. The server keeps running; the traceback is in its "
            "log. Please report it with the request that caused it.",
        )

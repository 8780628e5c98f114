"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}.

Every failure a client can cause maps to a 4xx with a one-line message; FastAPI's 422 validation errors
become 400s. Unexpected exceptions become a 500 with a generic message (never a traceback in the body).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from maxcli.interfaces import InputError
from maxcli.serve.schemas import UNION_TAGS

logger = logging.getLogger("maxcli.serve")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error answered to the client with `status` and OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code if code is not None else status,
        }
    }


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "") or "invalid request"


_MODEL_NAME = re.compile(r"[A-Z][A-Za-z0-9]+")  # a union member's class name in an error path


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """(one-line message, offending parameter) from pydantic's error list."""
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    # a union reports every member's failure; the one that got furthest into the value is the useful one
    err = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    # unions add the candidate type (prompt.str, prompt.list[int]), class or tag (messages.0.tool) to the
    # location; keep the field path
    if "[key]" in loc:  # a bad key of a mapping (logit_bias): name the mapping, quote the key
        at = loc.index("[key]")
        loc, bad_key = loc[:at - 1], loc[at - 1]
    else:
        bad_key = None
    param = ".".join(x for x in loc if not any(c in x for c in "[]") and not _MODEL_NAME.fullmatch(x)
                     and x not in ("str", "int", "float") and x not in UNION_TAGS) or None
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown or unsupported field {param!r} (fields that change the output and are not supported "\
               "here are refused, not ignored)", param
    if kind in ("json_invalid", "model_attributes_type") or (not loc and kind != "value_error"):
        return f"invalid JSON body: {_first_line(err.get('msg', ''))}", None
    msg = _first_line(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if bad_key is not None:
        msg = f"key {bad_key!r}: {msg}"
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(exc)
        return error_response(400, message, param)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return error_response(400, _first_line(str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route"
        response = error_response(exc.status_code, detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error while serving a request")
        return error_response(500, f"internal error: {type(exc).__name__}")

"""The API's errors: one JSON shape for every 4xx (and the rare 503), never an HTML page or a bare 500.

Every error body is ``{"error": {"code": "...", "message": "...", "field": "..."}}``;
``code`` is stable for scripts, ``message`` is for people, ``field`` names the
parameter at fault when there is one. Request validation (FastAPI's 422) is
rewritten into the same shape. A :class:`~schemas.errors.StoreError` is a 503:
the database is unavailable, the request may succeed later.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import ApiError, StoreError

__all__ = ["ERROR_RESPONSES", "ApiError", "ErrorBody", "ErrorDetail", "install_error_handlers"]

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """What every error response carries."""

    error: ErrorDetail


#: The error responses every route may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A parameter is malformed (the body names it)"},
    404: {"model": ErrorBody, "description": "No such device, metric, anomaly or snapshot"},
    422: {"model": ErrorBody, "description": "A parameter is out of range or of the wrong type"},
    503: {"model": ErrorBody, "description": "The store is unavailable; try again"},
}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _validation_field(error: dict[str, Any]) -> str | None:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body", "header")]
    return ".".join(loc) or None


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _validation_field(first)
        message = str(first.get("msg", "invalid request"))
        return error_response(422, "invalid", f"{field}: {message}" if field else message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None,
                              dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # A bug: say so in the same shape; the log has the traceback.
        logger.error("API request failed: %r", exc, exc_info=exc)
        return error_response(500, "internal", "the coordinator failed on this request (a bug: see its log)")

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        logger.warning("API request failed in the store: %s", exc)
        return error_response(503, "store_unavailable", "the store cannot answer right now; try again",
                              headers={"Retry-After": "5"})

"""Errors as RFC 9457 problem details (``application/problem+json``).

A cadenza error keeps its message, and its CLI exit code decides the status, so a script
reading either tells the same story: 2 (bad input) → 422, a taken run id or idempotency
key → 409, a payload too large → 413, 3 (not found) → 404, 4 (a callback token refused)
→ 409, 5 (the run's state does not allow it) → 409, 6 (the store takes no writes for now)
→ 503 with Retry-After, 1 (the run failed) → 409. Each problem carries ``exit_code`` and
``error`` (the error's class) as extension members; the CLI over HTTP exits with that code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from cadenza.errors import (
    CadenzaError,
    ConfigurationError,
    PayloadTooLarge,
    RunAlreadyExists,
    StoreUnavailable,
)

__all__ = ["PROBLEM_JSON", "Problem", "ProblemDetails", "install_problem_handlers", "status_of"]

log = logging.getLogger("cadenza.service")

PROBLEM_JSON = "application/problem+json"

_STATUS_BY_EXIT = {1: 409, 2: 422, 3: 404, 4: 409, 5: 409, 6: 503}
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# The exit code of the CLI over HTTP for problems that are not cadenza errors.
_EXIT_BY_STATUS = {401: 2, 403: 2, 404: 3, 413: 2, 422: 2, 429: 6, 503: 6}


class ProblemDetails(BaseModel):
    """A problem, as every error response of the API carries it."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    exit_code: int | None = None
    error: str | None = None


class Problem(Exception):
    """An HTTP problem raised by the service itself (auth, limits)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra or {}


def status_of(exc: CadenzaError) -> int:
    if isinstance(exc, RunAlreadyExists):
        return 409
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, ConfigurationError):
        return 422
    return _STATUS_BY_EXIT.get(type(exc).exit_code, 500)


def problem_response(
    status: int,
    detail: str,
    *,
    request: Request | None = None,
    title: str | None = None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.setdefault("exit_code", _EXIT_BY_STATUS.get(status, 1))
    body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app answers becomes a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            request=request,
            title=exc.title,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(CadenzaError)
    async def _cadenza(request: Request, exc: CadenzaError) -> JSONResponse:
        status = status_of(exc)
        name = type(exc).__name__
        extra: dict[str, Any] = {"exit_code": type(exc).exit_code, "error": name}
        if isinstance(exc, RunAlreadyExists):
            extra["run_id"] = exc.run_id
        headers = {"Retry-After": "5"} if isinstance(exc, StoreUnavailable) else None
        return problem_response(
            status,
            str(exc),
            request=request,
            type_=f"urn:cadenza:error:{name}",
            headers=headers,
            **extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem_response(
            422,
            f"the request does not fit the API: {where}; see /api/v1/openapi.json",
            request=request,
            exit_code=2,
            error="InvalidInput",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint {request.url.path}; see /api/v1/docs"
        return problem_response(
            exc.status_code, detail, request=request, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return problem_response(
            500,
            f"the service failed unexpectedly ({type(exc).__name__}); its log has the details",
            request=request,
        )

"""The FastAPI application: the API under ``/api/v1``, the console at ``/``, approval
links under ``/approve``, with problem details, limits and CORS around them all."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cadenza.service._limits import BodyLimit, RateLimiter
from cadenza.service._problems import install_problem_handlers
from cadenza.service._settings import ServiceSettings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from cadenza.client import Client

API_PREFIX = "/api/v1"


def _optional_router(module: str) -> APIRouter | None:
    """The ``router`` of an optional part of the service, when that part is installed."""
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the module exists but something it needs does not
            raise
        return None
    router: APIRouter | None = getattr(imported, "router", None)
    return router


def create_app(client: Client, *, settings: ServiceSettings | None = None) -> FastAPI:
    """The service over ``client``: run ``uvicorn`` on it, or ``cadenza serve``.

    >>> app = create_app(client, settings=ServiceSettings(rate_limit=120))
    """
    from cadenza.service._api import router as api_router

    settings = settings or ServiceSettings()
    app = FastAPI(
        title="cadenza",
        summary="Durable, event-driven agentic workflows over HTTP",
        version="1",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.client = client
    app.state.settings = settings
    app.state.limiter = (
        RateLimiter(settings.rate_limit, settings.rate_period)
        if settings.rate_limit is not None
        else None
    )
    install_problem_handlers(app)
    app.include_router(api_router, prefix=API_PREFIX)
    links = _optional_router("cadenza.service._links")
    if links is not None:
        app.include_router(links, prefix="/approve")
    console = _optional_router("cadenza.service._console")
    if console is not None:
        app.include_router(console)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-API-Key"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app

"""What an operator tunes about the service: limits, CORS, the address links point to."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from cadenza.security.links import DEFAULT_BASE_URL


class ServiceSettings(BaseModel):
    """Settings of the HTTP service (``cadenza serve`` reads them from ``CADENZA_SERVICE_*``).

    >>> ServiceSettings(rate_limit=120, cors_origins=("https://ops.example.com",))
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Largest request body accepted, in bytes; a larger one is refused with 413.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    #: Requests one API key may make per ``rate_period`` seconds (a token bucket that
    #: refills steadily); past it, 429 with Retry-After. None lifts the limit.
    rate_limit: int | None = Field(default=600, ge=1)
    rate_period: float = Field(default=60.0, gt=0)
    #: Origins allowed to call the API from a browser; none by default (CORS off).
    cors_origins: tuple[str, ...] = ()
    #: The address people reach the service at, used in the links it hands out.
    base_url: str = DEFAULT_BASE_URL
    #: Most runs one page of ``GET /api/v1/runs`` returns.
    max_page_size: int = Field(default=200, ge=1)
    #: How often a progress stream reads the store for what other processes did.
    stream_poll_seconds: float = Field(default=1.0, gt=0)

    @classmethod
    def from_env(cls, **overrides: object) -> ServiceSettings:
        """Settings from ``CADENZA_SERVICE_MAX_BODY_BYTES``, ``…_RATE_LIMIT`` (0: none),
        ``…_RATE_PERIOD``, ``…_CORS_ORIGINS`` (comma-separated) and ``…_BASE_URL``;
        ``overrides`` win."""
        values: dict[str, object] = {}
        env = os.environ
        if "CADENZA_SERVICE_MAX_BODY_BYTES" in env:
            values["max_body_bytes"] = int(env["CADENZA_SERVICE_MAX_BODY_BYTES"])
        if "CADENZA_SERVICE_RATE_LIMIT" in env:
            limit = int(env["CADENZA_SERVICE_RATE_LIMIT"])
            values["rate_limit"] = limit or None
        if "CADENZA_SERVICE_RATE_PERIOD" in env:
            values["rate_period"] = float(env["CADENZA_SERVICE_RATE_PERIOD"])
        if env.get("CADENZA_SERVICE_CORS_ORIGINS"):
            origins = env["CADENZA_SERVICE_CORS_ORIGINS"].split(",")
            values["cors_origins"] = tuple(o.strip() for o in origins if o.strip())
        if env.get("CADENZA_SERVICE_BASE_URL"):
            values["base_url"] = env["CADENZA_SERVICE_BASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

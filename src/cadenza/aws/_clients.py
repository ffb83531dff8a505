"""boto3 clients for the serverless shape, created lazily.

boto3 is the ``aws`` extra: cadenza imports without it, and the first client asked for
fails with the extra to install. Credentials and region come from the standard AWS chain
(environment, profile, the Lambda execution role); ``AWS_REGION`` is what Lambda sets.
``CADENZA_AWS_ENDPOINT_URL`` points every client at another endpoint (a moto server,
LocalStack) for testing.
"""

from __future__ import annotations

import os
from typing import Any

from cadenza.errors import MissingDependency

ENDPOINT_VARIABLE = "CADENZA_AWS_ENDPOINT_URL"


def aws_client(
    service: str, *, region: str | None = None, endpoint_url: str | None = None, **config: Any
) -> Any:
    """A boto3 client for ``service`` from the standard credential and region chain."""
    try:
        import boto3
    except ImportError as exc:
        raise MissingDependency(f"AWS {service}", "aws") from exc
    kwargs: dict[str, Any] = {
        "region_name": region or os.environ.get("AWS_REGION") or None,
        "endpoint_url": endpoint_url or os.environ.get(ENDPOINT_VARIABLE) or None,
    }
    if config:
        from botocore.config import Config

        kwargs["config"] = Config(**config)
    return boto3.client(service, **kwargs)


class LazyClient:
    """The boto3 client for ``service``, made on first use (building the object that
    holds it needs neither boto3 nor credentials), or the ``client`` given (a stub)."""

    def __init__(
        self,
        service: str,
        *,
        client: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        **config: Any,
    ) -> None:
        self._service = service
        self._client = client
        self._region = region
        self._endpoint_url = endpoint_url
        self._config = config

    def get(self) -> Any:
        if self._client is None:
            self._client = aws_client(
                self._service, region=self._region, endpoint_url=self._endpoint_url, **self._config
            )
        return self._client


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


THROTTLED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalException",
        "InternalFailure",
        "DependencyFailedException",
    }
)

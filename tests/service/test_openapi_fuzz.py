"""The OpenAPI description, run property-based with schemathesis: whatever a request
holds, the service answers it without a server error (bounded: a few examples per
operation)."""

from __future__ import annotations

import asyncio
import tempfile

import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error

from cadenza.client import Client
from cadenza.config import open_engine
from cadenza.security.api_keys import create_key
from cadenza.service import create_app
from cadenza.testing import InMemoryRunStore
from tests.service import service_workflows  # noqa: F401 - registers the workflows
from tests.service.conftest import settings


def _app_and_key() -> tuple[object, str]:
    # The in-memory store holds no event loop, so the app can serve on schemathesis's.
    async def build() -> tuple[object, str]:
        engine = await open_engine(
            store=InMemoryRunStore(),
            artifacts=f"file://{tempfile.mkdtemp(prefix='cadenza-fuzz-')}",
            secret=b"fuzz-secret-0123456789",
        )
        _, key = await create_key(
            engine, name="fuzz", tenant="default", scopes=["admin"], now=engine.clock.now()
        )
        return create_app(Client(engine), settings=settings()), key

    return asyncio.run(build())


APP, KEY = _app_and_key()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)


@schema.parametrize()
@hypothesis.settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_no_request_makes_the_service_fail(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error])

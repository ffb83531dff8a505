"""docs/service.md lists every operation of the API, and only those."""

from __future__ import annotations

import re
from pathlib import Path

from cadenza.service import create_app
from cadenza.testing import TestEnvironment
from tests.service.conftest import settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "service.md"


async def test_the_page_lists_every_operation(env: TestEnvironment) -> None:
    from cadenza.client import Client

    app = create_app(Client(env.engine), settings=settings())
    spec = app.openapi()
    served = {
        f"{method.upper()} {path.removeprefix('/api/v1')}"
        for path, operations in spec["paths"].items()
        for method in operations
        if path.startswith("/api/v1/")
    }
    documented = set(re.findall(r"`((?:GET|POST|PUT|DELETE) /[^`]*)`", PAGE.read_text()))
    assert documented == served

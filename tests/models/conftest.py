"""A small local HTTP server that plays a provider: it records requests and replays answers."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    """Answers queued replies in order; ``requests`` holds what it received."""

    def __init__(self) -> None:
        self.answers: deque[Answer] = deque()
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def json(self, data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.answers.append(
            Answer(
                status,
                json.dumps(data).encode(),
                {"Content-Type": "application/json", **(headers or {})},
            )
        )

    def sse(self, events: list[tuple[str | None, Any]]) -> None:
        """Queue a server-sent event stream of (event name, data) pairs."""
        text = ""
        for name, data in events:
            if name:
                text += f"event: {name}\n"
            payload = data if isinstance(data, str) else json.dumps(data)
            text += f"data: {payload}\n\n"
        self.answers.append(Answer(200, text.encode(), {"Content-Type": "text/event-stream"}))

    def raw(self, body: bytes, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.answers.append(Answer(status, body, headers or {}))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                provider.requests.append(
                    Recorded(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                answer = (
                    provider.answers.popleft()
                    if provider.answers
                    else Answer(500, b'{"error": {"message": "no answer queued"}}')
                )
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()

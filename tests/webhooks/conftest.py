"""Real HTTP servers on loopback that play webhook receivers, started by the tests."""
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.webhooks.models import WebhookEndpoint
from tests.integration.conftest import relay, start_worker  # noqa: F401  (the fixtures, for webhook_worker)

# Retries within a second or two; a silent endpoint times out in half a second.
FAST = {
    "CONVEYOR_WEBHOOK_BACKOFF_BASE": "0.4",
    "CONVEYOR_WEBHOOK_BACKOFF_CAP": "3",
    "CONVEYOR_WEBHOOK_READ_TIMEOUT": "0.5",
    "CONVEYOR_WEBHOOK_MAX_RETRIES": "2",
}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next scripted (status, headers, body); the last one repeats."""

    url: str
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def answer(self, *responses: tuple[int, dict[str, str], bytes]) -> None:
        self.script[:] = responses


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append(Received(headers=dict(self.headers), body=body))
            status, headers, reply = state.script.pop(0) if len(state.script) > 1 else state.script[0]
            self.send_response(status)
            for name, value in {"Content-Length": str(len(reply)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog does) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


@pytest.fixture
def endpoint_for(user):
    def make(url: str) -> WebhookEndpoint:
        return WebhookEndpoint.objects.create(owner=user, url=url, description="test receiver")

    return make


@pytest.fixture
def webhook_worker(start_worker):  # noqa: F811
    return start_worker(**FAST)

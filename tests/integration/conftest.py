"""Fixtures of the integration tests that submit many webhook jobs (chaos, failover)."""
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# The receiver answers 503 to this share of requests, after holding each one this long (so that two
# deliveries of one event at the same time would overlap and be seen).
REFUSED_SHARE = 0.05
ANSWER_SECONDS = 0.03


@dataclass
class Deliveries:
    """What the receiver saw, per event id."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    received: Counter = field(default_factory=Counter)
    in_flight: Counter = field(default_factory=Counter)
    overlapping: set = field(default_factory=set)
    refused: int = 0


@pytest.fixture
def counting_receiver() -> Iterator[tuple[str, Deliveries]]:
    """A webhook receiver on loopback: its URL, and what it saw of each event. It refuses a few deliveries (503),
    so jobs retry, and holds each a moment, so two deliveries of one event at the same time overlap and are seen."""
    seen = Deliveries()
    chance = random.Random(7)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            event = self.headers["Conveyor-Event-Id"]
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with seen.lock:
                seen.in_flight[event] += 1
                if seen.in_flight[event] > 1:
                    seen.overlapping.add(event)
                refuse = chance.random() < REFUSED_SHARE
            time.sleep(ANSWER_SECONDS)
            with seen.lock:
                seen.in_flight[event] -= 1
                if refuse:
                    seen.refused += 1
                else:
                    seen.received[event] += 1
            self.send_response(503 if refuse else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", seen
    server.shutdown()
    server.server_close()

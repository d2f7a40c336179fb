"""The real-work benchmark's webhook receiver: answers 200 after the delay its path names, counting what is in flight.

Started by the harness as a process of its own (`python -m bench.receiver --port N`), so its threads
never wait for the harness's GIL. `POST /hook/<ms>` answers after <ms> milliseconds; `GET /stats` gives
the requests answered and the peak in flight since the last `POST /stats/reset`.
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READY = "Receiver listening"


class Counters:
    """Requests answered and the most in flight at once; the handler threads share one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.peak = self.answered = 0

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.answered += 1

    def reset(self) -> None:
        with self.lock:
            self.peak, self.answered = self.in_flight, 0

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"answered": self.answered, "peak_in_flight": self.peak, "in_flight": self.in_flight}


counters = Counters()


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/stats/reset":
            counters.reset()
            self._answer(200, b"{}")
            return
        prefix, _, delay_ms = self.path.rpartition("/")
        if prefix != "/hook" or not delay_ms.isdigit():
            self._answer(404, b"POST /hook/<milliseconds>")
            return
        counters.enter()
        try:
            time.sleep(int(delay_ms) / 1000)
            self._answer(200, b"ok")
        finally:
            counters.leave()

    def do_GET(self) -> None:
        if self.path != "/stats":
            self._answer(404, b"GET /stats")
            return
        self._answer(200, json.dumps(counters.snapshot()).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """One line per request would cost the receiver more than answering it."""


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    # Workers open a connection per delivery, up to their concurrency at once; the default backlog of 5
    # would drop connections and delay them by a SYN retry (a second).
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ReceiverServer(("127.0.0.1", args.port), ReceiverHandler)
    print(f"{READY} on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

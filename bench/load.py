"""Load on loopback: wrk when installed, else a threaded Python generator; one keep-alive client for probes."""
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of `values` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def generator_name(preferred: str) -> str:
    """'wrk' or 'python': `auto` picks wrk when it is on PATH."""
    if preferred == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if preferred == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: `apt-get install wrk`, or pass --load-generator python.")
    return preferred


def generator_version(name: str) -> str:
    if name != "wrk":
        return "Python threads (bench.load)"
    # wrk prints its version line (and usage) on stderr and exits 1 when given no URL.
    completed = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (completed.stdout + completed.stderr).splitlines()[0].split(" Copyright")[0]


def post_load(
    *, generator: str, url: str, body: bytes, headers: dict[str, str], seconds: float, connections: int
) -> LoadResult:
    """POST `body` to `url` over `connections` keep-alive connections for `seconds`."""
    if generator == "wrk":
        return _post_load_wrk(url=url, body=body, headers=headers, seconds=seconds, connections=connections)
    return _post_load_python(url=url, body=body, headers=headers, seconds=seconds, connections=connections)


def _post_load_wrk(*, url: str, body: bytes, headers: dict[str, str], seconds: float, connections: int) -> LoadResult:
    env = {**os.environ, "BENCH_BODY": body.decode(), "BENCH_AUTHORIZATION": headers.get("Authorization", "")}
    # One wrk thread: wrk is far cheaper per request than the servers, and each thread it adds
    # would take a core the servers under test need on a small machine.
    # wrk counts its duration in whole seconds.
    command = ["wrk", "--threads", "1", "--connections", str(connections), "--duration", f"{max(1, round(seconds))}s",
               "--script", str(WRK_SCRIPT), url]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    summary = next((line for line in completed.stdout.splitlines() if line.startswith("BENCH ")), None)
    if completed.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(summary.removeprefix("BENCH "))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non_2xx=data["non_2xx"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


def _post_load_python(
    *, url: str, body: bytes, headers: dict[str, str], seconds: float, connections: int
) -> LoadResult:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures = [[0, 0] for _ in range(connections)]  # per connection: non-2xx, socket errors
    deadline = time.monotonic() + seconds

    def hammer(index: int) -> None:
        client = KeepAliveClient(url)
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                status, _ = client.request("POST", body=body, headers=headers)
            except OSError:
                failures[index][1] += 1
                client = KeepAliveClient(url)
                continue
            latencies[index].append((time.perf_counter() - began) * 1000)
            if not 200 <= status < 300:
                failures[index][0] += 1
        client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    every = [value for values in latencies for value in values]
    return LoadResult(
        requests=len(every),
        seconds=elapsed,
        non_2xx=sum(non_2xx for non_2xx, _ in failures),
        socket_errors=sum(errors for _, errors in failures),
        p50_ms=percentile(every, 50),
        p99_ms=percentile(every, 99),
    )


def paced_post(
    *, url: str, body: bytes, headers: dict[str, str], rate: float, seconds: float, connections: int
) -> list[tuple[int, bytes, float]]:
    """POST `body` to `url` at a steady `rate` a second for `seconds`, over `connections` keep-alive connections.

    Request k is due at the start + k / `rate` on connection k mod `connections`, whatever the answers
    before it took; a connection behind its schedule sends at once. Returns each answer's status, body
    and the wall-clock time its body was read.
    """
    total = max(1, round(rate * seconds))
    start = time.monotonic()
    replies: list[list[tuple[int, bytes, float]]] = [[] for _ in range(connections)]
    errors: list[OSError] = []

    def send(index: int) -> None:
        client = KeepAliveClient(url)
        try:
            for number in range(index, total, connections):
                pause = start + number / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                status, answer = client.request("POST", body=body, headers=headers)
                replies[index].append((status, answer, time.time()))
        except OSError as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(index,)) for index in range(min(connections, total))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(threads)} connections to {url} failed: {errors[0]}")
    return [reply for answered in replies for reply in answered]


class KeepAliveClient:
    """One HTTP/1.1 connection to the host of `url`, reused for every request to its path."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urlsplit(url)
        self.path = parts.path or "/"
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def request(self, method: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                path: str | None = None) -> tuple[int, bytes]:
        self.connection.request(method, path or self.path, body=body, headers={
            **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})
        })
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()

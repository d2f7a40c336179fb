"""Real HTTP(S) servers on loopback that play webhook receivers, and a DNS the tests script."""
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from apps.webhooks.models import WebhookEndpoint

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
    port: int = 0
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # the SNI of each TLS handshake

    def answer(self, *responses: tuple[int, dict[str, str], bytes]) -> None:
        self.script[:] = responses


@contextmanager
def _receiving(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
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
    if tls is not None:
        tls.sni_callback = lambda sock, name, context: state.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{state.port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with _receiving() as state:
        yield state


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl_req(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         *map(str, args)],
        check=True, capture_output=True,
    )


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> Certificates:
    """A throwaway CA and, signed by it, a certificate for hooks.example only (made by Debian's openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    made = Certificates(ca=folder / "ca.pem", cert=folder / "hooks.pem", key=folder / "hooks.key")
    _openssl_req("-subj", "/CN=Conveyor test CA", "-keyout", folder / "ca.key", "-out", made.ca,
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    _openssl_req("-subj", "/CN=hooks.example", "-keyout", made.key, "-out", made.cert,
                 "-CA", made.ca, "-CAkey", folder / "ca.key",
                 "-addext", "subjectAltName=DNS:hooks.example", "-addext", "basicConstraints=CA:FALSE")
    return made


@pytest.fixture
def tls_receiver(certificates) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 that speaks HTTPS with the certificate for hooks.example."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert, certificates.key)
    with _receiving(context) as state:
        yield state


@dataclass
class Resolver:
    """Stands in for DNS and the network: see the `resolver` fixture."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    connected: list[tuple[str, int]] = field(default_factory=list)

    def answer(self, name: str, *answers: list[str]) -> None:
        """Each lookup of `name` gets the next list of addresses; the last one repeats."""
        self.answers[name] = list(answers)


@pytest.fixture
def resolver(monkeypatch) -> Resolver:
    """Scripted answers for the names a test gives (other names resolve as usual), every lookup of
    them and every address a socket connects to recorded; only 127.0.0.1 is reachable, so nothing
    leaves the machine and other addresses are refused at once."""
    state = Resolver()
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        script = state.answers.get(host)
        if script is None:
            return real_getaddrinfo(host, port, family, type, proto, flags)
        state.lookups.append(host)
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port))) for a in addresses]

    def connect(sock: socket.socket, address) -> None:
        state.connected.append(tuple(address[:2]))
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(f"{address[0]} is unreachable in this test")
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return state


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
def webhook_worker(start_worker):
    return start_worker(**FAST)

"""A real SMTP server on loopback (aiosmtpd) that can answer DATA with scripted replies."""
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from tests.processes import free_port


@dataclass
class MailServer:
    port: int
    # Replies to DATA, in order, before messages are accepted (e.g. "451 4.3.0 Try later").
    replies: list[str] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.received.append(message_from_bytes(envelope.content))
        return "250 2.0.0 Message accepted"


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer(port=free_port())
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    yield server
    controller.stop()


@pytest.fixture
def email_worker(start_worker, mail_server):
    # Retries at once or after a second, so a 451 is retried within the test.
    return start_worker(
        EMAIL_URL=f"smtp://127.0.0.1:{mail_server.port}",
        CONVEYOR_EMAIL_BACKOFF_BASE="0.4",
        CONVEYOR_EMAIL_BACKOFF_CAP="1",
    )

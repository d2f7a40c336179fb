"""What RabbitMQ and Celery say now, asked with a short timeout: is the broker reachable, how many messages
each queue holds, which workers are online. For readiness, the dashboard, /metrics and the reconciler."""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from django.conf import settings

from config import broker
from config.celery import app as celery_app

# A probe must answer quickly even when a dependency hangs.
PROBE_TIMEOUT_SECONDS = 2


def broker_nodes_status() -> dict[str, str]:
    """Each RabbitMQ node of the broker URL, as `host:port` (one, or a cluster's several: kombu's failover list),
    with 'ok' or why it did not answer. The nodes are asked at once, so the probe waits its timeout once at most."""
    urls = broker.broker_urls(celery_app.conf.broker_url)
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(pool.map(_broker_node_status, urls))
    return {_node_address(url): answer for url, answer in zip(urls, answers, strict=True)}


def broker_status(nodes: dict[str, str]) -> str:
    """'ok' while any of `nodes` answers, since every process moves to one that does; else why not."""
    answers = list(nodes.values())
    if "ok" in answers:
        return "ok"
    return answers[0] if len(answers) == 1 else f"unavailable: none of its {len(answers)} nodes answers"


def _broker_node_status(url: str) -> str:
    try:
        with celery_app.connection_for_read(url=url, connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            # One try: kombu's connect() tries twice, 2 s apart, longer than a probe may take.
            conn.ensure_connection(max_retries=0)
    except Exception as exc:  # any failure is the answer, not an error of the probe
        cause = exc.__cause__ or exc  # kombu's OperationalError wraps what the socket said
        return f"unavailable: {cause.__class__.__name__}: {cause}".strip()
    return "ok"


def _node_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}"


@dataclass(frozen=True)
class QueueDepth:
    queue: str  # the job queue's name in Conveyor (`default`), or `dead`
    name: str  # its name in RabbitMQ (prefixed)
    ready: int | None
    # Delivered to a worker and not acknowledged yet; only RabbitMQ's management API knows it.
    unacked: int | None
    consumers: int | None


def queues_depth(*, names: list[str] | None = None) -> list[QueueDepth]:
    """Job queues `names` (default: every configured queue and the dead queue) as RabbitMQ counts them now;
    None where it did not say.

    From the management API (CONVEYOR_BROKER_API) when set, else from a passive declare over AMQP, which
    knows only ready messages and consumers.
    """
    names = names if names is not None else [*settings.CONVEYOR_QUEUES, "dead"]
    unknown = [QueueDepth(name, broker.queue_name(name), None, None, None) for name in names]
    if settings.CONVEYOR_BROKER_API:
        try:
            return [_queue_depth_from_api(name) for name in names]
        except (requests.RequestException, ValueError, KeyError):
            pass  # the management API is optional: fall back to AMQP
    depths = []
    try:
        with celery_app.connection_for_read(connect_timeout=PROBE_TIMEOUT_SECONDS) as connection:
            channel = connection.default_channel
            for name in names:
                try:
                    _, ready, consumers = channel.queue_declare(queue=broker.queue_name(name), passive=True)
                except Exception:  # not declared yet: a passive declare closes the channel
                    channel = connection.channel()
                    depths.append(QueueDepth(name, broker.queue_name(name), None, None, None))
                else:
                    depths.append(QueueDepth(name, broker.queue_name(name), ready, None, consumers))
    except Exception:  # the broker is down: every number is unknown
        return unknown
    return depths


def _queue_depth_from_api(name: str) -> QueueDepth:
    url = urlsplit(settings.CONVEYOR_BROKER_API)
    # CELERY_BROKER_URL may list several nodes (kombu's failover, `;` between); they share one vhost.
    vhost = quote(urlsplit(broker.broker_urls(settings.CELERY_BROKER_URL)[0]).path[1:] or "/", safe="")
    base = urlunsplit((url.scheme, url.hostname + (f":{url.port}" if url.port else ""), url.path, "", ""))
    response = requests.get(
        f"{base.rstrip('/')}/queues/{vhost}/{quote(broker.queue_name(name), safe='')}",
        auth=(unquote(url.username or ""), unquote(url.password or "")),
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    if response.status_code == 404:
        return QueueDepth(name, broker.queue_name(name), None, None, None)
    response.raise_for_status()
    data = response.json()
    return QueueDepth(name, broker.queue_name(name), data["messages_ready"], data["messages_unacknowledged"],
                      data["consumers"])


def workers_active() -> dict[str, list[dict]]:
    """Workers that answered Celery's control API within the probe timeout, each with its running tasks."""
    try:
        answers = celery_app.control.inspect(timeout=PROBE_TIMEOUT_SECONDS / 2).active()
    except Exception:  # the broker is down: no worker can answer
        return {}
    return dict(sorted((answers or {}).items()))

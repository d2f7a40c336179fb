"""The RabbitMQ topology: job queues (quorum, bounded, dead-lettering) and the dead-letter queue."""
from django.conf import settings
from kombu import Connection, Exchange, Queue


def broker_urls(url: str) -> list[str]:
    """The node URLs of a broker URL: one, or several separated by `;` (kombu's failover list, a cluster's nodes)."""
    return [node.strip() for node in url.split(";") if node.strip()]


def queue_name(name: str) -> str:
    """The broker name of job queue `name` (`default`, `reports`) for this environment."""
    return f"{settings.CONVEYOR_QUEUE_PREFIX}{name}"


def jobs_exchange() -> Exchange:
    # A topic exchange, routing to each job queue by its name; an exchange's type is fixed once declared.
    return Exchange(f"{settings.CONVEYOR_QUEUE_PREFIX}conveyor", type="topic", durable=True)


def dead_exchange() -> Exchange:
    return Exchange(f"{settings.CONVEYOR_QUEUE_PREFIX}conveyor.dead", type="fanout", durable=True)


def dead_queue() -> Queue:
    """Where failed and poison messages wait for an operator to re-drive them."""
    return Queue(
        queue_name("dead"),
        exchange=dead_exchange(),
        routing_key="dead",
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def job_queue(name: str) -> Queue:
    full_name = queue_name(name)
    return Queue(
        full_name,
        exchange=jobs_exchange(),
        routing_key=full_name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-max-length": settings.CONVEYOR_QUEUE_MAX_LENGTHS.get(name, settings.CONVEYOR_QUEUE_MAX_LENGTH),
            "x-overflow": "reject-publish",
            "x-delivery-limit": settings.CONVEYOR_DELIVERY_LIMIT,
            "x-dead-letter-exchange": dead_exchange().name,
            # at-least-once needs reject-publish; a dead letter is never lost on the way.
            # https://www.rabbitmq.com/docs/quorum-queues#dead-lettering
            "x-dead-letter-strategy": "at-least-once",
        },
    )


def job_queues() -> list[Queue]:
    return [job_queue(name) for name in settings.CONVEYOR_QUEUES]


def topology_declare(connection: Connection) -> None:
    """Declare the dead-letter queue and every job queue; declaring twice changes nothing."""
    channel = connection.default_channel
    dead_queue()(channel).declare()
    for queue in job_queues():
        queue(channel).declare()

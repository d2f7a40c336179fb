"""Queue depths as the dashboard and /metrics read them from the real RabbitMQ: management API or AMQP."""
from django.test import override_settings

from apps.ops.selectors import queues_depth
from config.broker import dead_queue, queue_name, topology_declare
from config.celery import app as celery_app
from tests.processes import wait_until


def _declared() -> list[str]:
    with celery_app.connection_for_write() as connection:
        topology_declare(connection)
    return [queue_name("default"), queue_name("reports"), dead_queue().name]


def test_depths_from_the_management_api_include_unacknowledged_messages():
    # `make test` enables the management plugin on a local RabbitMQ; the default URL points at it.
    names = _declared()
    # The API counts a queue's messages every few seconds; a queue it has not counted yet (just
    # declared, or RabbitMQ just restarted) is read over AMQP meanwhile.
    depths = wait_until(lambda: [d for d in queues_depth() if d.unacked is not None], timeout=30,
                        what="the management API to count the queues")
    assert [depth.name for depth in depths] == names
    assert all(isinstance(depth.unacked, int) and isinstance(depth.ready, int) for depth in depths), depths


@override_settings(CONVEYOR_BROKER_API="http://guest:guest@127.0.0.1:9/api/")
def test_without_the_management_api_depths_come_from_amqp_with_unacknowledged_unknown():
    names = _declared()
    depths = queues_depth()
    assert [depth.name for depth in depths] == names
    assert all(isinstance(depth.ready, int) and depth.unacked is None for depth in depths), depths

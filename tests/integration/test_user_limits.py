"""One user cannot take the system from the others: a flood of submissions from one account is refused past its
limits while another account's jobs keep starting at their usual pace, with a real relay and worker."""
import threading
import time

import pytest
from django.db import connection
from django.test import Client, override_settings

from apps.jobs.models import Job
from tests.processes import wait_until

pytestmark = pytest.mark.integration

FLOOD = 150
# Each accepted job of the flood holds a worker thread this long: a job of the other user that had to wait behind
# one would start this late.
FLOOD_JOB_SECONDS = 2.0


def _start_latencies(jobs: list[Job]) -> list[float]:
    """Seconds from each job's submission to its start (one attempt each)."""
    started = Job.objects.filter(id__in=[job.id for job in jobs])
    return [(job.started_at - job.created_at).total_seconds() for job in started]


def _submit_noops(client: Client, count: int, pause: float) -> list[Job]:
    jobs = []
    for _ in range(count):
        response = client.post("/api/jobs/", {"kind": "diagnostics.noop", "params": {}},
                               content_type="application/json")
        assert response.status_code == 202, response.content
        jobs.append(Job.objects.get(id=response.json()["id"]))
        time.sleep(pause)  # paced like a client's ordinary traffic, not a wait for a condition
    return jobs


def _all_succeeded(jobs: list[Job]) -> bool:
    return Job.objects.filter(id__in=[job.id for job in jobs], status="succeeded").count() == len(jobs)


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=12, CONVEYOR_USER_JOBS_WAITING_MAX=4)
def test_a_flood_from_one_account_is_refused_while_another_accounts_jobs_run_at_their_usual_pace(
        start_worker, bearer_client, user, other_user):
    # given a worker with 16 threads, and bob's usual pace (12 jobs in a few seconds, within his limits): how soon
    # his jobs start when nobody floods
    start_worker(concurrency=16)
    alice, bob = bearer_client(user), bearer_client(other_user)
    usual = _submit_noops(bob, 4, pause=0.1)
    wait_until(lambda: _all_succeeded(usual), timeout=30, what="bob's jobs before the flood")
    usual_latency = max(_start_latencies(usual))

    # when alice sends 150 two-second jobs as fast as she can while bob goes on as usual
    answers = []

    def flood() -> None:
        try:
            for _ in range(FLOOD):
                answers.append(alice.post("/api/jobs/", {"kind": "diagnostics.sleep",
                                                         "params": {"seconds": FLOOD_JOB_SECONDS, "steps": 2}},
                                          content_type="application/json"))
        finally:
            connection.close()

    flooding = threading.Thread(target=flood)
    flooding.start()
    during = _submit_noops(bob, 8, pause=0.2)
    flooding.join(timeout=120)
    assert not flooding.is_alive()
    wait_until(lambda: _all_succeeded(during), timeout=30, what="bob's jobs during the flood")

    # then alice got what her limits allow, and every other answer was a 429 saying so
    accepted = [answer for answer in answers if answer.status_code == 202]
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(accepted) + len(refused) == FLOOD
    # the bucket's 12 at once and one more each 5 s, never more than 4 waiting: at most 13 of the 16 threads
    assert 4 <= len(accepted) <= 13
    for answer in refused:
        assert set(answer.json()) == {"error", "fields"}
        assert answer.json()["error"].startswith(("Too many submissions", "You have 4 jobs waiting"))
        assert "Retry-After" not in answer or answer["Retry-After"].isdigit()
    assert Job.objects.filter(submitted_by=user).count() == len(accepted)
    # and bob's jobs started at his usual pace, none held behind alice's two-second jobs
    latencies = _start_latencies(during)
    print(f"bob's start latency: usual max {usual_latency:.3f} s; during the flood max {max(latencies):.3f} s, "
          f"alice {len(accepted)} accepted, {len(refused)} refused")
    assert max(latencies) < min(1.0, FLOOD_JOB_SECONDS / 2), latencies
    wait_until(lambda: _all_succeeded([Job(id=answer.json()["id"]) for answer in accepted]), timeout=60,
               what="alice's accepted jobs")

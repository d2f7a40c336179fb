"""PostgreSQL stopped for real: pages answer 503 saying so, the API waits for it and then answers 503 too, and
readiness says the database failed."""
import pytest

from tests.processes import postgresql_stopped

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_pages_the_api_and_readyz_answer_503_while_postgresql_is_stopped(signed_in, api_client, client, settings):
    # given an API that waits half a second for PostgreSQL
    settings.CONVEYOR_WEB_DB_WAIT_SECONDS = 0.5
    settings.CONVEYOR_API_TOKEN_CACHE_SECONDS = 0
    with postgresql_stopped():
        page = signed_in.get("/jobs/")
        api = api_client.get("/api/jobs/")
        ready = client.get("/readyz")
    # then neither is a 500: both say the database is unavailable and when to try again
    assert page.status_code == 503 and "The database is unavailable" in page.content.decode()
    assert api.status_code == 503 and api.json()["error"].startswith("The database is unavailable")
    assert page["Retry-After"] == api["Retry-After"] == "5"
    # and readiness names the part that failed
    assert ready.status_code == 503 and ready.json()["broker"] == "ok"
    assert ready.json()["database"].startswith("unavailable: ")
    # and once it is back, both answer again
    assert signed_in.get("/jobs/").status_code == 200 and api_client.get("/api/jobs/").status_code == 200

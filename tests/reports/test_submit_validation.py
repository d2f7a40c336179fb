"""Report submissions: bad input is refused with a field error before any job exists, and a repeated one stores
nothing new."""
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.jobs.models import Job

pytestmark = pytest.mark.django_db

GOOD = b"region,amount\nnorth,1.5\nsouth,2\n"


def submit(client: Client, content: bytes, *, group_by: str = "region", value_column: str = "amount"):
    upload = SimpleUploadedFile("data.csv", content, content_type="text/csv")
    return client.post(
        "/api/jobs/",
        {"kind": "reports.csv_summary", "group_by": group_by, "value_column": value_column, "file": upload},
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a CSV file: it contains binary data"),
        (b"just one line of prose without columns", "does not look like a CSV file"),
        ("region,amount\nZürich,1\n".encode("latin-1"), "not UTF-8 text: byte 0xfc on line 2"),
        (b"", "The submitted file is empty."),
    ],
)
def test_a_file_that_is_not_utf8_csv_gets_a_file_field_error(api_client, content, message):
    response = submit(api_client, content)
    assert response.status_code == 400
    assert message in response.json()["fields"]["file"][0]
    assert not Job.objects.exists()


def test_a_missing_column_gets_an_error_naming_the_columns_there_are(api_client):
    response = submit(api_client, GOOD, value_column="price")
    assert response.status_code == 400
    assert response.json()["fields"]["value_column"] == [
        "The file has no column 'price'; its columns are: region, amount."
    ]


def test_a_file_over_the_size_limit_is_refused_with_the_limit(api_client, settings):
    settings.CONVEYOR_REPORT_MAX_UPLOAD_BYTES = 10
    response = submit(api_client, GOOD)
    assert response.status_code == 400
    assert "the limit is 10 bytes" in response.json()["fields"]["file"][0]


def test_the_report_form_page_shows_the_field_error(user):
    client = Client()
    client.force_login(user)
    assert client.get("/reports/new/").url == "/jobs/new/reports.csv_summary/"
    upload = SimpleUploadedFile("data.csv", GOOD)
    response = client.post(
        "/jobs/new/reports.csv_summary/", {"file": upload, "group_by": "city", "value_column": "amount"}
    )
    assert response.status_code == 200
    assert "The file has no column &#x27;city&#x27;" in response.content.decode()


def _uploads() -> set[str]:
    return set(default_storage.listdir("reports/uploads")[1]) if default_storage.exists("reports/uploads") else set()


def test_the_same_file_with_the_same_idempotency_key_answers_200_and_stores_nothing_new(api_client):
    # given a report submitted with an idempotency key
    def submit_keyed(content: bytes):
        upload = SimpleUploadedFile("data.csv", content, content_type="text/csv")
        return api_client.post("/api/jobs/", {"kind": "reports.csv_summary", "group_by": "region",
                                              "value_column": "amount", "idempotency_key": "monthly-7", "file": upload})

    before = _uploads()
    first = submit_keyed(GOOD)
    stored = _uploads() - before
    try:
        # when the same file is sent again with the same key, then the same job answers 200 and no file is added
        again = submit_keyed(GOOD)
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"] and Job.objects.count() == 1
        assert stored == {f"{first.json()['id']}.csv"} and _uploads() - before == stored
        # and another file under that key is refused, storing nothing either
        other = submit_keyed(b"region,amount\nwest,9\n")
        assert other.status_code == 409 and _uploads() - before == stored
    finally:
        for name in _uploads() - before:
            default_storage.delete(f"reports/uploads/{name}")

"""NOTIFY conveyor_outbox when a job enters the outbox (queued, not yet published), for the relay."""
from django.db import migrations

# Row-level, so only rows that enter the outbox notify: a submission, or an operator's retry that
# puts a job back. PostgreSQL delivers a notification when the transaction commits and sends
# identical ones of one transaction once. apps/jobs/relay.py listens.
NOTIFY = """
CREATE FUNCTION jobs_job_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('conveyor_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_job_outbox_notify
    AFTER INSERT OR UPDATE OF status, published_at ON jobs_job
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.published_at IS NULL)
    EXECUTE FUNCTION jobs_job_outbox_notify();
"""

DROP = """
DROP TRIGGER jobs_job_outbox_notify ON jobs_job;
DROP FUNCTION jobs_job_outbox_notify();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0002_job_console"),
    ]

    operations = [migrations.RunSQL(NOTIFY, DROP)]

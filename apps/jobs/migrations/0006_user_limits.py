"""Per-user limits: the submission allowances (an UNLOGGED table: no WAL per submission; a crash refills every
bucket), and an index of each user's waiting jobs, built CONCURRENTLY so a table of millions of jobs keeps taking
submissions meanwhile (hence a migration outside a transaction)."""
import django.db.models.deletion
from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("jobs", "0005_scheduled_and_system_keys"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="SubmissionAllowance",
            fields=[
                ("user", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                              related_name="+", serialize=False, to=settings.AUTH_USER_MODEL)),
                ("full_at", models.DateTimeField()),
            ],
        ),
        migrations.RunSQL("ALTER TABLE jobs_submissionallowance SET UNLOGGED",
                          "ALTER TABLE jobs_submissionallowance SET LOGGED"),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(condition=models.Q(("status__in", ["queued", "scheduled", "retrying"])),
                               fields=["submitted_by"], name="job_owner_waiting"),
        ),
    ]

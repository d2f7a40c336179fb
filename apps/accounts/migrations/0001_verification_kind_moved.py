"""The verification email kind moved from apps.notifications to apps.accounts, and took the app's name."""
from django.db import migrations

OLD, NEW = "notifications.send_verification_email", "accounts.send_verification_email"


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0004_lifecycle"),
    ]

    operations = [
        migrations.RunSQL(
            [("UPDATE jobs_job SET kind = %s WHERE kind = %s", [NEW, OLD]),
             ("UPDATE jobs_jobtally SET kind = %s WHERE kind = %s", [NEW, OLD])],
            [("UPDATE jobs_job SET kind = %s WHERE kind = %s", [OLD, NEW]),
             ("UPDATE jobs_jobtally SET kind = %s WHERE kind = %s", [OLD, NEW])],
        ),
    ]

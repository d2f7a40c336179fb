"""One model row as a plain INSERT, for the writes every job makes, where building the ORM's query
costs more than running it (a submission's Job, a worker's TaskResult)."""
from collections.abc import Sequence

from django.db import connection
from django.db.models import Model


def row_insert_sql(row: Model, *, conflict_target: str = "", update: Sequence[str] = ()) -> tuple[str, list]:
    """INSERT of every concrete field of `row` (or, on conflict on `conflict_target`, an UPDATE of the
    `update` fields): the SQL and its parameters. Values are prepared as Model.save prepares them,
    auto_now fields included; the database's own defaults (a serial id) are left to it."""
    quote = connection.ops.quote_name
    meta = row._meta
    fields = [field for field in meta.concrete_fields if not (field.primary_key and field.db_returning)]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    if conflict_target:
        columns = [meta.get_field(name).column for name in update]
        sql += f" ON CONFLICT ({quote(conflict_target)}) DO UPDATE SET " + ", ".join(
            f"{quote(column)} = EXCLUDED.{quote(column)}" for column in columns
        )
    params = [field.get_db_prep_save(field.pre_save(row, add=True), connection) for field in fields]
    return sql, params

"""Model rows to and from plain SQL, for the statements every job makes, where building the ORM's query costs
more than running it (a submission's INSERT, a worker's start): written as Model.save writes them, read back
as the ORM loads them."""
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Model

M = TypeVar("M", bound=Model)


def row_insert_sql(row: Model) -> tuple[str, list]:
    """INSERT of every concrete field of `row`: the SQL and its parameters. Values are prepared as Model.save
    prepares them, auto_now fields included; the database's own defaults (a serial id) are left to it."""
    quote = connection.ops.quote_name
    meta = row._meta
    fields = [field for field in meta.concrete_fields if not (field.primary_key and field.db_returning)]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    params = [field.get_db_prep_save(field.pre_save(row, add=True), connection) for field in fields]
    return sql, params


def row_load(model: type[M], values: dict[str, object]) -> M:
    """An instance of `model` from a row read by plain SQL (column name -> value), each value converted as the
    ORM converts it (JSON decoded, time zones attached)."""
    fields = model._meta.concrete_fields
    db = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` would look it up again per field
    loaded = []
    for field in fields:
        value = values[field.column]
        for convert in [*db.ops.get_db_converters(field), *field.get_db_converters(db)]:
            value = convert(value, field, db)
        loaded.append(value)
    return model.from_db(db.alias, [field.attname for field in fields], loaded)

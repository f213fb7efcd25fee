"""A log table in a database (SQLite or PostgreSQL) copied into Parquet for the engines.

Arrow types come from the table's column types, not from the first chunk's values: a column
that is NULL in all of the first 100k rows must not fix its type as null for the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stillroom.audit import litellm_log
from stillroom.errors import InputError


def copy_log(source: str, out: Path) -> str:
    """Copy a gateway database's `requests` table (or, in a LiteLLM proxy's database,
    `LiteLLM_SpendLogs`) into Parquet at `out`, 100k rows at a time, JSON columns as JSON
    text; return the log's schema: stillroom or litellm."""
    import sqlalchemy as sa

    from stillroom.serve.db import database_url

    url = database_url(source)  # a URL as it is (postgresql:// with its driver), or a file
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if inspector.has_table("requests"):
                name, schema = "requests", "stillroom"
            elif inspector.has_table(litellm_log.TABLE):
                name, schema = litellm_log.TABLE, "litellm"
            else:
                raise InputError(
                    f"{source}: no `requests` table (stillroom serve --db) and no "
                    f"`{litellm_log.TABLE}` table (a LiteLLM proxy's database); for other "
                    "logs export Parquet/JSONL and map its columns with --map"
                )
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            cols = [
                sa.cast(c, sa.Text).label(c.name) if isinstance(c.type, sa.JSON) else c
                for c in table.columns
            ]
            result = conn.execution_options(stream_results=True).execute(sa.select(*cols))
            _write_rows(result, table, out, f"{source} ({name})")
    except sa.exc.SQLAlchemyError as e:
        raise InputError(
            f"{source}: cannot read the request log ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0]}); check the path or URL"
        ) from None
    finally:
        engine.dispose()
    return schema


def _write_rows(result: Any, table: Any, out: Path, label: str) -> None:
    """Rows from a SQLAlchemy result into Parquet, typed by the table's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = [_arrow_type(c.type) for c in table.columns]
    schema = pa.schema([(c.name, t) for c, t in zip(table.columns, types, strict=True)])
    writer = None
    while chunk := result.fetchmany(100_000):
        arrays = [pa.array([_py(row[i], t) for row in chunk], type=t) for i, t in enumerate(types)]
        if writer is None:
            writer = pq.ParquetWriter(out, schema)
        writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    if writer is None:
        raise InputError(f"{label}: the request log is empty; nothing to audit")
    writer.close()


def _arrow_type(t: Any) -> Any:
    import pyarrow as pa
    import sqlalchemy as sa

    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float | sa.Numeric):
        return pa.float64()
    if isinstance(t, sa.DateTime):  # instants; UTC when the column says its zone
        return pa.timestamp("us", tz="UTC" if t.timezone else None)
    if isinstance(t, sa.ARRAY):
        return pa.list_(pa.string())
    return pa.string()  # text, JSON (cast to text), anything else as its text


def _py(v: Any, t: Any) -> Any:
    """A database value as the Arrow type `t` takes it."""
    import pyarrow as pa

    if v is None:
        return None
    if pa.types.is_string(t) and not isinstance(v, str):
        return json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        try:
            return float(v) if pa.types.is_floating(t) else int(v)
        except (TypeError, ValueError):
            return None  # SQLite keeps any value in any column: unreadable, so missing
    if pa.types.is_list(t):
        return [None if x is None else str(x) for x in v]
    return v

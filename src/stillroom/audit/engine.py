"""Two SQL engines behind one small interface: DuckDB in-process (default) and Spark SQL.

The feature queries are written once; the few functions whose names differ between the two
dialects (JSON fields, string type, a nested value as JSON text) come from `Dialect`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Dialect:
    name: str
    string: str  # the string type in CAST

    def json_field(self, col: str, key: str) -> str:
        """A top-level JSON field as text; NULL when absent or when the text is not JSON."""
        if self.name == "duckdb":
            return f"(CASE WHEN json_valid({col}) THEN json_extract_string({col}, '$.{key}') END)"
        return f"get_json_object({col}, '$.{key}')"

    def json_ok(self, col: str) -> str:
        if self.name == "duckdb":
            return f"json_valid({col})"
        return f"(get_json_object({col}, '$') IS NOT NULL)"

    def json_fields(self, col: str, keys: tuple[str, ...], valid: str | None = None) -> str:
        """The top-level fields `keys` of JSON text `col`, parsed once, as one value that
        `json_get` reads; NULL when the text is not JSON (`valid`: a column already saying so)."""
        if self.name == "duckdb":
            paths = ", ".join(f"'$.{k}'" for k in keys)
            ok = valid or f"json_valid({col})"
            return f"(CASE WHEN {ok} THEN json_extract_string({col}, [{paths}]) END)"
        schema = ", ".join(f"{k} STRING" for k in keys)
        return f"from_json({col}, '{schema}')"

    def json_get(self, value: str, keys: tuple[str, ...], key: str) -> str:
        """One field of a `json_fields` value, as text."""
        if self.name == "duckdb":
            return f"{value}[{keys.index(key) + 1}]"
        return f"{value}.{key}"

    def matches(self, col: str, pattern: str) -> str:
        """Whether `col` contains a match of the regular expression `pattern` (RE2/Java)."""
        if self.name == "duckdb":
            return f"regexp_matches({col}, '{pattern}')"
        return f"({col} RLIKE '{pattern}')"

    def to_json(self, col: str) -> str:
        return f"to_json({col})"

    def epoch(self, col: str) -> str:
        """Seconds since 1970 from a timestamp value."""
        if self.name == "duckdb":
            return f"epoch(CAST({col} AS TIMESTAMP))"
        return f"CAST(unix_micros(CAST({col} AS TIMESTAMP)) AS DOUBLE) / 1e6"


DUCKDB = Dialect("duckdb", "VARCHAR")
SPARK = Dialect("spark", "STRING")


class SQLEngine(Protocol):
    dialect: Dialect

    def read_parquet(self, name: str, paths: list[Path]) -> None: ...
    def columns(self, name: str) -> list[tuple[str, str]]: ...
    def view(self, name: str, sql: str) -> None: ...
    def materialize(self, name: str, sql: str) -> None: ...
    def register(self, name: str, rows: dict[str, list[Any]]) -> None: ...
    def rows(self, sql: str) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


class DuckDBEngine:
    dialect = DUCKDB

    def __init__(self, memory_limit: str = "3GB", threads: int | None = None) -> None:
        import duckdb

        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute(f"SET threads = {threads or os.cpu_count() or 2}")
        self.con.execute("SET preserve_insertion_order = false")
        self._keep: list[Any] = []

    def read_parquet(self, name: str, paths: list[Path]) -> None:
        files = ", ".join(f"'{p}'" for p in paths)
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{files}])")

    def read_jsonl(self, name: str, paths: list[Path]) -> None:
        files = ", ".join(f"'{p}'" for p in paths)
        self.con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_json([{files}], "
            "format='newline_delimited', sample_size=-1, ignore_errors=true)"
        )

    def columns(self, name: str) -> list[tuple[str, str]]:
        return [(r[0], str(r[1])) for r in self.con.execute(f"DESCRIBE {name}").fetchall()]

    def view(self, name: str, sql: str) -> None:
        self._drop(name, "table")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def materialize(self, name: str, sql: str) -> None:
        self._drop(name, "view")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def _drop(self, name: str, kind: str) -> None:
        """Drop a temporary `kind` (table or view) called `name`, if there is one: a second
        log read on this engine may make a view where the first made a table."""
        catalog = "duckdb_tables()" if kind == "table" else "duckdb_views()"
        column = "table_name" if kind == "table" else "view_name"
        if self.con.execute(
            f"SELECT 1 FROM {catalog} WHERE {column} = ? AND temporary", [name]
        ).fetchall():
            self.con.execute(f"DROP {kind.upper()} {name}")

    def register(self, name: str, rows: dict[str, list[Any]]) -> None:
        import pyarrow as pa

        table = pa.table(rows)
        self._keep.append(table)
        self.con.register(name, table)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.con.sql(sql).to_arrow_table().to_pylist()

    def close(self) -> None:
        self.con.close()


class SparkEngine:
    dialect = SPARK

    def __init__(self, master: str = "local[2]", memory: str = "3g") -> None:
        from pyspark.sql import SparkSession

        self.spark = (
            SparkSession.builder.master(master)
            .appName("stillroom-audit")
            .config("spark.driver.memory", memory)
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.ansi.enabled", "false")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")

    def read_parquet(self, name: str, paths: list[Path]) -> None:
        self.spark.read.parquet(*[str(p) for p in paths]).createOrReplaceTempView(name)

    def columns(self, name: str) -> list[tuple[str, str]]:
        return [(f.name, f.dataType.simpleString()) for f in self.spark.table(name).schema.fields]

    def view(self, name: str, sql: str) -> None:
        self.spark.sql(sql).createOrReplaceTempView(name)

    def materialize(self, name: str, sql: str) -> None:
        df = self.spark.sql(sql).cache()
        df.count()
        df.createOrReplaceTempView(name)

    def register(self, name: str, rows: dict[str, list[Any]]) -> None:
        import pandas as pd

        frame = pd.DataFrame(rows)
        if frame.empty:
            cols = ", ".join(f"CAST(NULL AS STRING) AS {c}" for c in rows)
            self.spark.sql(f"SELECT {cols} WHERE 1 = 0").createOrReplaceTempView(name)
            return
        self.spark.createDataFrame(frame).createOrReplaceTempView(name)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return [r.asDict() for r in self.spark.sql(sql).collect()]

    def close(self) -> None:
        pass  # the session is shared by the process; stopping it costs the next audit a JVM


def make_engine(name: str) -> SQLEngine:
    from stillroom.errors import StillroomError

    if name == "duckdb":
        return DuckDBEngine()
    if name == "spark":
        try:
            return SparkEngine()
        except ImportError:
            raise StillroomError(
                "--engine spark needs PySpark and Java 17; pip install pyspark"
            ) from None
    raise StillroomError(f"--engine {name!r}: use duckdb or spark")

"""The same feature queries on Spark (local mode) give the same flags as DuckDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillroom.audit.run import decide, measure
from stillroom.audit.score import self_calibrate
from stillroom.audit.simulate import simulate
from stillroom.audit.text import Embedder


@pytest.mark.integration
def test_spark_gives_the_same_flags_as_duckdb_on_100k_rows(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    m = simulate(tmp_path, accounts=150, seed=5, days=3, volume=0.9)
    assert m["requests"] >= 100_000
    emb = Embedder()
    duck = measure(m["log"], engine="duckdb", embedder=emb)
    spark = measure(m["log"], engine="spark", embedder=emb)
    assert duck.links.units == spark.links.units
    assert set(duck.units) == set(spark.units)
    for unit, f in duck.units.items():
        g = spark.units[unit]
        for k, v in f.items():
            if isinstance(v, float) and isinstance(g[k], float):
                assert g[k] == pytest.approx(v, rel=1e-9, abs=1e-9), (unit, k)
            else:
                assert g[k] == v, (unit, k, v, g[k])
    cal = self_calibrate(list(duck.units.values()))
    a, b = decide(duck, cal, 0.01), decide(spark, cal, 0.01)
    assert a.flagged_accounts() == b.flagged_accounts() != set()

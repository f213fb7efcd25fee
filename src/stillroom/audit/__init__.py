"""Audit a gateway's request log for accounts that harvest the API for distillation.

ingest.py    the log (gateway DB, Parquet, JSONL) into a typed, validated view; garbage counted
dbstage.py   a log table in SQLite or PostgreSQL copied into Parquet, typed by its columns
litellm_log.py  LiteLLM's spend log (its database or an export) as the request log, in SQL
otel_spans.py   OpenTelemetry GenAI spans (JSONL) as the request log, staged to Parquet
features.py  per-account (or per-actor) features in SQL that DuckDB and Spark both run
text.py      text features on a per-account sample: MinHash template reuse, topic breadth
links.py     cross-account links (templates, keys, addresses, user agents, timing) -> actors
score.py     a one-sided distance to the benign population, thresholded at a chosen FPR
report.py    the table, JSON and HTML, with evidence in plain words and example prompts
simulate.py  labeled traffic in the gateway's log schema, for tests and benchmarks
"""

"""Test helpers: a real local OpenAI-compatible server with a tiny random model and faults."""

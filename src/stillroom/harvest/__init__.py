"""Harvest: teacher calls into a run store (SQLite), with the top-k signal codec and cost control."""

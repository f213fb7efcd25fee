"""Harvest: teacher calls into a run store, the top-k signal codec, cost and budget."""
